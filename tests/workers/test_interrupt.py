"""interrupt() (workers/interrupt.py): when and how a streamed SEND chunk is cut for the
frames that wait behind it (RFC 4975 §7.1.1, rfc-checklist case 29), on a real FrameGate and
SentLog, as the outbox drives them."""

from __future__ import annotations

from msrpd.workers.gate import FrameGate, Write
from msrpd.workers.interrupt import MIN_CUT, interrupt
from msrpd.workers.sentlog import SentLog

HEAD = (
    b"MSRP t1 SEND\r\nTo-Path: msrp://b:1/s;tcp\r\nFrom-Path: msrp://r:2/t;tcp msrp://a:3/u;tcp"
    b"\r\nMessage-ID: m1\r\nByte-Range: 101-%s/9000000\r\nX-Extra: kept\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n"
)


class Out:
    """What the outbox does with the writes: the gate, the sent log, the output offset."""

    def __init__(self, ids: list[bytes | None]) -> None:
        self.asked: list[tuple[bytes, int]] = []
        self.ids = ids
        self.gate = FrameGate(self.chunk_ids)
        self.log = SentLog()
        self.offset = 0
        self.wire: list[Write] = []

    def chunk_ids(self, tid: bytes, written: int) -> bytes | None:
        self.asked.append((tid, written))
        return self.ids.pop(0)

    def write(self, data: bytes, source: object = None, more: bool = False) -> None:
        if more and self.gate.held and source == self.gate.owner:
            self.put(interrupt(self.gate, self.log, self.offset, source))
        self.put(self.gate.offer(Write(data, False, source, more)))

    def put(self, writes: list[Write]) -> None:
        for item in writes:
            self.offset += len(item.data)
            if item.source is not None:
                self.log.note(self.offset, item.source, item.data, item.more)
            self.wire.append(item)


def test_a_waiting_reply_cuts_the_chunk_at_its_next_piece() -> None:
    out = Out([b"t2"])
    out.write(b"other frame\r\n")  # the output offset does not start at 0
    out.write(HEAD % b"*", "s", more=True)
    out.write(b"x" * MIN_CUT, "s", more=True)
    out.write(b"MSRP r1 200 OK\r\n-------r1$\r\n")  # waits behind the chunk
    assert out.wire[-1].data == b"x" * MIN_CUT
    out.write(b"y" * 10, "s", more=True)
    assert out.asked == [(b"t1", MIN_CUT)]
    sent = [item.data for item in out.wire[3:]]
    assert sent[:2] == [b"\r\n-------t1+\r\n", b"MSRP r1 200 OK\r\n-------r1$\r\n"]
    # Same head under the new id, Byte-Range from the next byte, range-end as it was.
    start = b"%d" % (101 + MIN_CUT)
    assert sent[2] == (HEAD % b"*").replace(b"t1", b"t2").replace(b"101-", start + b"-")
    assert sent[3] == b"y" * 10
    out.write(b"\r\n-------t1$\r\n", "s")
    assert out.wire[-1].data == b"\r\n-------t2$\r\n"


def test_range_end_kept_and_cut_again_counts_from_the_new_head() -> None:
    out = Out([b"t2", b"t3"])
    out.write(HEAD % b"9000000", "s", more=True)
    out.write(b"x" * MIN_CUT, "s", more=True)
    out.write(b"reply 1")
    out.write(b"y" * MIN_CUT, "s", more=True)
    out.write(b"reply 2")
    out.write(b"z", "s", more=True)
    assert out.asked == [(b"t1", MIN_CUT), (b"t2", MIN_CUT)]
    heads = [i.data for i in out.wire if i.data.startswith(b"MSRP t")]
    assert [h.split(b"\r\n")[4] for h in heads] == [
        b"Byte-Range: 101-9000000/9000000",
        b"Byte-Range: %d-9000000/9000000" % (101 + MIN_CUT),
        b"Byte-Range: %d-9000000/9000000" % (101 + 2 * MIN_CUT),
    ]


def test_not_cut_below_min_or_when_not_a_transactions_send() -> None:
    # Too little of the chunk out yet: the reply waits, nothing asked.
    out = Out([])
    out.write(HEAD % b"*", "s", more=True)
    out.write(b"x" * (MIN_CUT - 1), "s", more=True)
    out.write(b"reply")
    out.write(b"x", "s", more=True)
    assert out.asked == [] and out.wire[-1].data == b"x"
    # Not a SEND, or no Byte-Range: never asked.
    for head in (HEAD.replace(b" SEND", b" FOO"), HEAD.replace(b"Byte-Range", b"X-Range")):
        out = Out([])
        out.write(head % b"*", "s", more=True)
        out.write(b"x" * MIN_CUT, "s", more=True)
        out.write(b"reply")
        out.write(b"x", "s", more=True)
        assert out.asked == [] and out.gate.held
    # Not one of the relay's transactions (chunk_ids says None): left whole.
    out = Out([None])
    out.write(HEAD % b"*", "s", more=True)
    out.write(b"x" * MIN_CUT, "s", more=True)
    out.write(b"reply")
    out.write(b"x", "s", more=True)
    assert out.asked == [(b"t1", MIN_CUT)] and out.gate.held
    assert [i.data for i in out.wire] == [HEAD % b"*", b"x" * MIN_CUT, b"x"]
