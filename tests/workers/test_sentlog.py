"""SentLog: the relayed frames a connection's unsent output holds (issue 12 item 5)."""

from __future__ import annotations

from msrpd.workers.sentlog import SentLog


def test_records_go_once_their_last_byte_reached_the_kernel() -> None:
    log = SentLog()
    log.records.append((100, 7, b"frame a"))  # Outbox._put's one-piece case
    log.records.append((250, 8, b"frame b"))
    log.trim(99)
    assert [r[0] for r in log.records] == [100, 250]
    log.trim(100)
    assert [r[0] for r in log.records] == [250]
    assert log.take() == [(8, b"frame b")]
    assert not log.records and not log.streams


def test_a_trim_takes_every_record_sent_and_keeps_the_rest_in_order() -> None:
    log = SentLog()
    for end in (10, 20, 30, 40, 50):
        log.records.append((end, end // 10, b"f%d" % end))
    log.trim(35)  # three whole, the fourth half-written: it stays
    assert log.records == [(40, 4, b"f40"), (50, 5, b"f50")]
    log.trim(35)  # nothing new reached the kernel
    assert [r[0] for r in log.records] == [40, 50]
    log.trim(10**9)
    assert log.records == [] and log.take() == []


def test_a_streamed_frame_is_recorded_with_its_head_at_its_last_piece() -> None:
    log = SentLog()
    log.note(50, 7, b"head", more=True)
    log.note(150, 7, b"piece", more=True)
    assert log.streams[7] == (b"head", 46)  # where it starts: interrupt.py counts from it
    assert log.take() == [(7, b"head")]  # half written: reported by its head
    log.note(50, 7, b"head", more=True)
    log.note(150, 7, b"piece", more=True)
    log.note(160, 7, b"end-line", more=False)
    assert list(log.records) == [(160, 7, b"head")] and not log.streams
    log.trim(159)
    assert log.take() == [(7, b"head")]
