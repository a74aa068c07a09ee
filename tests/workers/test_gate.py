"""FrameGate: what may be written now, so frames never interleave on one connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from msrpd.workers.gate import FrameGate, Write


def w(data: bytes, source: object = None, more: bool = False) -> Write:
    return Write(data, False, source, more)


def test_nothing_streaming_everything_goes_out() -> None:
    gate = FrameGate()
    assert gate.offer(w(b"a")) == [w(b"a")]
    assert gate.offer(w(b"b", "x")) == [w(b"b", "x")]
    assert gate.owner is None and not gate.held


def test_other_frames_wait_for_the_streamed_one() -> None:
    gate = FrameGate()
    assert gate.offer(w(b"head", "s", more=True)) == [w(b"head", "s", True)]
    assert gate.offer(w(b"reply")) == []
    assert gate.offer(w(b"x1", "x")) == []
    assert gate.held_bytes == len(b"reply") + 2
    assert gate.offer(w(b"piece", "s", more=True)) == [w(b"piece", "s", True)]
    out = gate.offer(w(b"end", "s"))
    assert out == [w(b"end", "s"), w(b"reply"), w(b"x1", "x")]
    assert gate.held_bytes == 0 and gate.owner is None


def test_a_waiting_stream_takes_over_and_keeps_order() -> None:
    gate = FrameGate()
    gate.offer(w(b"A1", "a", more=True))
    assert gate.offer(w(b"B1", "b", more=True)) == []
    assert gate.offer(w(b"x")) == []
    assert gate.offer(w(b"B2", "b")) == []
    # A ends: B's whole frame goes out, then the one-piece frame that came after B1.
    assert gate.offer(w(b"A2", "a")) == [w(b"A2", "a"), w(b"B1", "b", True), w(b"B2", "b"), w(b"x")]


@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.integers(1, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_random_streams_come_out_whole_and_in_order(plan: list[tuple[str, int]]) -> None:
    """Frames from three sources, each in 1-3 pieces, offered in an arbitrary interleaving:
    the output is the frames one after another, each source's frames in its own order."""
    pieces: dict[str, list[list[Write]]] = {}
    for n, (source, count) in enumerate(plan):
        frame = [
            w(b"%s%d.%d" % (source.encode(), n, i), source, i < count - 1) for i in range(count)
        ]
        pieces.setdefault(source, []).append(frame)
    queues = {s: [p for frame in frames for p in frame] for s, frames in pieces.items()}
    gate, out = FrameGate(), []
    while any(queues.values()):
        for source in sorted(queues):  # round-robin: the worst interleaving for the gate
            if queues[source]:
                out.extend(gate.offer(queues[source].pop(0)))
    assert not gate.held and gate.owner is None
    frames, current = [], []
    for item in out:
        current.append(item)
        if not item.more:
            frames.append(current)
            current = []
    assert all(len({i.source for i in f}) == 1 for f in frames)  # no frame interleaved
    for source, expected in pieces.items():
        assert [f for f in frames if f[0].source == source] == expected


def test_an_abandoned_stream_is_ended_with_hash_then_the_waiting_frames_go() -> None:
    """Issue 12: the worker relaying a streamed frame died; its link's source is abandoned.
    The frame ends with the `#` flag (RFC 4975 §7.1) and what waited behind it goes out."""
    gate = FrameGate()
    head = b"MSRP t77 SEND\r\nTo-Path: msrp://b/s;tcp\r\n\r\n"
    dead, other = ("link", 7), ("link", 8)
    assert gate.offer(w(head, dead, more=True)) == [w(head, dead, True)]
    assert gate.offer(w(b"piece", dead, more=True)) == [w(b"piece", dead, True)]
    other_head = b"MSRP o1 SEND\r\n\r\n"
    assert gate.offer(w(other_head, other, more=True)) == []  # a second stream waits
    assert gate.offer(w(b"reply")) == []
    out = gate.abandon(dead)
    assert out == [w(b"\r\n-------t77#\r\n", dead), w(other_head, other, True)]
    assert gate.owner == other and gate.open == {other: b"o1"}
    assert gate.abandon(dead) == []  # ended once
    # The waiting stream's source dies while it waits behind nothing: its frame ends too.
    assert gate.abandon(other) == [w(b"\r\n-------o1#\r\n", other), w(b"reply")]
    assert gate.owner is None and not gate.held and gate.open == {}


def test_abandoning_a_source_that_is_not_mid_frame_changes_nothing() -> None:
    gate = FrameGate()
    head = b"MSRP t1 SEND\r\n\r\n"
    gate.offer(w(head, "s", more=True))
    gate.offer(w(b"end", "s"))
    assert gate.abandon("s") == [] and gate.owner is None and gate.open == {}
    gate.offer(w(b"not an msrp head", "x", more=True))
    assert gate.offer(w(b"reply")) == []
    assert gate.abandon("x") == [w(b"reply")] and gate.owner is None


def test_cut_ends_the_chunk_lets_what_waits_go_and_renames_its_end() -> None:
    """RFC 4975 §7.1.1 (interrupt.py decides when): the chunk ends with "+", the reply that
    waited goes, the new chunk's head follows; the source's own end-line, naming the first
    chunk's id, goes out under the new one, its flag kept."""
    gate = FrameGate()
    gate.offer(w(b"MSRP t1 SEND\r\n", "s", more=True))
    gate.offer(w(b"body1", "s", more=True))
    assert gate.offer(w(b"reply")) == []
    out = gate.cut("s", b"MSRP t2 SEND\r\n")
    assert out == [w(b"\r\n-------t1+\r\n", "s"), w(b"reply"), w(b"MSRP t2 SEND\r\n", "s", True)]
    assert gate.owner == "s" and gate.open == {"s": b"t2"}
    assert gate.offer(w(b"body2", "s", more=True)) == [w(b"body2", "s", True)]
    assert gate.offer(w(b"\r\n-------t1$\r\n", "s")) == [w(b"\r\n-------t2$\r\n", "s")]
    assert gate.owner is None and not gate.renamed and not gate.open


def test_cut_new_head_waits_behind_a_stream_that_waited() -> None:
    gate = FrameGate()
    gate.offer(w(b"MSRP t1 SEND\r\n", "s", more=True))
    assert gate.offer(w(b"MSRP u1 SEND\r\n", "u", more=True)) == []
    out = gate.cut("s", b"MSRP t2 SEND\r\n")
    assert out == [w(b"\r\n-------t1+\r\n", "s"), w(b"MSRP u1 SEND\r\n", "u", True)]
    assert gate.offer(w(b"more", "s", more=True)) == []  # behind u's frame, after its head
    out = gate.offer(w(b"\r\n-------u1$\r\n", "u"))
    assert out == [
        w(b"\r\n-------u1$\r\n", "u"),
        w(b"MSRP t2 SEND\r\n", "s", True),
        w(b"more", "s", True),
    ]
    # A second cut of the same stream: its end-line is under the current id.
    assert gate.offer(w(b"reply")) == []
    out = gate.cut("s", b"MSRP t3 SEND\r\n")
    assert out[0] == w(b"\r\n-------t2+\r\n", "s")
    assert gate.offer(w(b"\r\n-------t1#\r\n", "s")) == [w(b"\r\n-------t3#\r\n", "s")]


def test_abandoned_after_a_cut_ends_under_the_new_id() -> None:
    gate = FrameGate()
    gate.offer(w(b"MSRP t1 SEND\r\n", "s", more=True))
    gate.offer(w(b"reply"))
    gate.cut("s", b"MSRP t2 SEND\r\n")
    assert gate.abandon("s") == [w(b"\r\n-------t2#\r\n", "s")]
    assert not gate.renamed and gate.owner is None
