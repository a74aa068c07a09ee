"""The frame reader against the hand-written corpus, in every split, and its bounds."""

from __future__ import annotations

import time

import pytest

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.events import NEED_DATA, BodyPiece, FrameEnd, InvalidFrame
from msrpd.protocol.frame import Frame
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import FrameReader, ReaderState
from msrpd.protocol.status import Status

from .corpus import CASES, Case, send, send_summary
from .feed import feed, splits

SPLITS = ("whole", "bytewise", "random1", "random2", "random3")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(case: Case, split: str) -> None:
    assert feed(case.data, splits(len(case.data))[split]) == case.expected


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.expected[-1] == ("closed",)], ids=lambda c: c.name
)
def test_corpus_followed_by_another_frame(case: Case) -> None:
    data = case.data + send("next1")
    for sizes in splits(len(data)).values():
        assert feed(data, sizes) == [*case.expected[:-1], send_summary("next1"), ("closed",)]


def test_body_is_a_view_of_the_frame_bytes() -> None:
    reader = FrameReader()
    reader.receive_data(send("v1", b"payload"))
    frame = reader.next_event()
    assert isinstance(frame, Frame)
    body = frame.body
    assert isinstance(body, memoryview)
    assert body.obj is frame.buf
    assert bytes(body) == b"payload"
    assert frame.buf == send("v1", b"payload")


def test_streamed_frame_comes_as_head_pieces_end() -> None:
    body = bytes(range(256)) * 40  # 10 KiB, over a 1 KiB whole-frame limit
    data = send("big1", body)
    limits = ReaderLimits(max_body=1024)
    for sizes in splits(len(data)).values():
        assert feed(data, sizes, limits) == [
            ("streamed", b"big1", b"SEND", b"$", body + b"\r\n"[:0]),
            ("closed",),
        ]


def test_streamed_pieces_never_hold_part_of_the_end_line() -> None:
    body = b"x" * 5000 + b"\r\n-------big2" + b"y" * 100
    data = send("big2", body)
    reader = FrameReader(ReaderLimits(max_body=100))
    events = []
    for i in range(0, len(data), 7):
        reader.receive_data(data[i : i + 7])
        events.extend(reader.events())
    head, *pieces, end = events
    assert isinstance(head, Frame) and head.streamed and head.body is None
    assert all(isinstance(p, BodyPiece) for p in pieces)
    assert isinstance(end, FrameEnd)
    assert end.raw == b"\r\n-------big2$\r\n" and end.flag == b"$"
    assert b"".join(p.data for p in pieces) == body
    assert head.buf + b"".join(p.data for p in pieces) + end.raw == data


def test_whole_frame_limit_is_exact() -> None:
    limits = ReaderLimits(max_body=64)
    assert feed(send("w1", b"a" * 64), None, limits)[0][0] == "frame"
    assert feed(send("w2", b"a" * 65), None, limits)[0][0] == "streamed"
    for sizes in splits(200).values():
        assert feed(send("w1", b"a" * 64), sizes, limits)[0][0] == "frame"


def test_over_limit_refused_with_413_when_not_streaming() -> None:
    limits = ReaderLimits(max_body=64, stream_large=False)
    data = send("big3", b"z" * 1000) + send("after")
    for sizes in splits(len(data)).values():
        assert feed(data, sizes, limits) == [
            ("invalid", b"big3", Status.STOP_SENDING, True),
            send_summary("after"),
            ("closed",),
        ]


def test_header_block_over_the_cap_is_fatal_with_tid() -> None:
    limits = ReaderLimits(max_head=1024)
    data = b"MSRP h1 SEND\r\nTo-Path: " + b"x" * 2000
    reader = FrameReader(limits)
    reader.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.tid == b"h1"
    assert info.value.status == Status.UNINTELLIGIBLE
    assert reader.state is ReaderState.CLOSED
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_first_line_without_lf_is_capped() -> None:
    reader = FrameReader(ReaderLimits(max_head=256))
    reader.receive_data(b"MSRP " + b"a" * 300)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.tid is None


def test_unbounded_never_ending_body_is_streamed_with_bounded_buffer() -> None:
    """malformed_bad_end_line: the frame never ends; memory stays bounded, nothing is lost."""
    limits = ReaderLimits(max_body=4096)
    reader = FrameReader(limits)
    reader.receive_data(send("nv1", b"")[: -len(b"\r\n-------nv1$\r\n")])
    got = 0
    for _ in range(500):
        reader.receive_data(b"q" * 1000)
        for event in reader.events():
            if isinstance(event, BodyPiece):
                got += len(event.data)
        assert reader.buffered <= limits.max_body + limits.max_head + 1000
    assert got >= 500 * 1000 - 4096 - 64


def test_need_data_and_eof_between_frames() -> None:
    reader = FrameReader()
    assert reader.next_event() is NEED_DATA
    reader.receive_data(send("e1")[:10])
    assert reader.next_event() is NEED_DATA
    reader.receive_data(send("e1")[10:])
    assert isinstance(reader.next_event(), Frame)
    assert reader.next_event() is NEED_DATA
    with pytest.raises(RuntimeError):
        reader.receive_data(b"")
        reader.receive_data(b"x")


def test_invalid_frame_head_holds_the_header_block() -> None:
    data = send("hb1", None, extra=("NoColon",))
    reader = FrameReader()
    reader.receive_data(data)
    event = reader.next_event()
    assert isinstance(event, InvalidFrame)
    assert event.reason == "header line 4 has no colon"
    assert event.head == data[: data.index(b"-------hb1")]


def _bytewise_seconds(size: int) -> float:
    data = send("lin1", b"a" * size)
    reader = FrameReader(ReaderLimits(max_body=size + 10))
    # This thread's CPU time: the suite runs beside other tests (pytest-xdist), and wall time
    # would count the time the scheduler gave them.
    start = time.thread_time()
    for i in range(len(data)):
        reader.receive_data(data[i : i + 1])
        for _ in reader.events():
            pass
    return time.thread_time() - start


def test_bytewise_input_costs_linear_time() -> None:
    """O(n), not O(n^2): four times the bytes must cost far less than sixteen times the time.
    A ratio, not a speed target: it holds on any machine."""
    small = min(_bytewise_seconds(20_000) for _ in range(3))
    large = min(_bytewise_seconds(80_000) for _ in range(3))
    assert large / small < 8


def test_in_head_and_head_serial_follow_the_frame_heads() -> None:
    """The worker bounds the time a head takes (slowloris): `in_head` is true from a head's
    first byte to its end, not in a body; `head_serial` changes with each new head."""
    reader = FrameReader(ReaderLimits(max_body=1024))

    def feed_part(data: bytes) -> None:
        reader.receive_data(data)
        list(reader.events())

    assert not reader.in_head
    first, second = send("h1", b"x" * 10), send("h2", b"y" * 4096)
    feed_part(first[:5])
    assert reader.in_head
    serial = reader.head_serial
    feed_part(first[5:] + second[:7])  # h1 ends, h2's head begins in the same read
    assert reader.in_head and reader.head_serial != serial
    head_end = second.index(b"\r\n\r\n") + 4
    feed_part(second[7 : head_end + 100])  # h2's head is complete, its body is streaming
    assert not reader.in_head
    feed_part(second[head_end + 100 :])
    assert not reader.in_head and reader.buffered == 0
