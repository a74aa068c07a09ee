"""LinkQueue: one link's write queue and the messages it answers for (sans-IO)."""

from __future__ import annotations

from msrpd.workers.handoff import HEADER, HandoffDecoder, HandoffKind
from msrpd.workers.linkqueue import JOIN_MAX, LinkQueue


def _frame(conid: int, token: int, payload: bytes) -> bytes:
    return HEADER.pack(HandoffKind.FRAME, 0, 0, conid, token, len(payload))


def _gone(conid: int, token: int) -> bytes:
    return HEADER.pack(HandoffKind.GONE, 0, 0, conid, token, 0)


def test_take_joins_every_piece_in_order_and_empties_the_queue() -> None:
    q = LinkQueue()
    assert not q
    q.push(_frame(1, 10, b"abcdef"), [b"abc", memoryview(b"def")], 6, 1, 10)
    q.push_reply(_gone(7, 70))
    q.push(_frame(2, 20, b""), [], 0, 2, 20)
    assert q
    assert q.queued == 3 * HEADER.size + 6
    (data,), tracked = q.take()
    assert not q and q.queued == 0
    messages = HandoffDecoder().feed(data)
    assert [(m.kind, m.conid, m.token, bytes(m.payload)) for m in messages] == [
        (HandoffKind.FRAME, 1, 10, b"abcdef"),
        (HandoffKind.GONE, 7, 70, b""),
        (HandoffKind.FRAME, 2, 20, b""),
    ]
    # Replies are not tracked; each tracked message ends where its bytes end in the batch.
    assert tracked == [(HEADER.size + 6, 1, 10), (3 * HEADER.size + 6, 2, 20)]
    assert q.take() == ([b""], [])


def test_parts_are_not_copied_before_take() -> None:
    q = LinkQueue()
    part = bytearray(b"old")
    q.push(_frame(1, 1, b"old"), [memoryview(part)], 3, 1, 1)
    part[:] = b"new"  # the caller broke its promise: the write shows it
    (data,), _ = q.take()
    assert data.endswith(b"new")


def test_a_big_batch_is_taken_as_its_pieces_uncopied() -> None:
    """Over JOIN_MAX the pieces go to writelines as queued: a big payload is not copied."""
    q = LinkQueue()
    big = b"b" * JOIN_MAX
    q.push(_frame(1, 1, b"a"), [b"a"], 1, 1, 1)
    q.push(_frame(2, 2, big), [big], len(big), 2, 2)
    pieces, tracked = q.take()
    assert len(pieces) == 4 and pieces[3] is big
    messages = HandoffDecoder().feed(b"".join(pieces))
    assert [(m.token, bytes(m.payload)) for m in messages] == [(1, b"a"), (2, big)]
    assert tracked == [(HEADER.size + 1, 1, 1), (2 * HEADER.size + 1 + len(big), 2, 2)]
    assert not q and q.queued == 0


def test_a_batch_wholly_in_the_kernel_leaves_nothing_to_answer_for() -> None:
    q = LinkQueue()
    for k in range(3):
        q.push(_frame(k, k, b"x"), [b"x"], 1, k, k)
    (data,), tracked = q.take()
    q.written(tracked, len(data), 0)
    assert q.fail() == []


def test_messages_whose_bytes_the_transport_still_holds_stay_tracked() -> None:
    q = LinkQueue()
    size = HEADER.size + 100
    for k in range(4):
        q.push(_frame(k, 100 + k, b"y" * 100), [b"y" * 100], 100, k, 100 + k)
    (data,), tracked = q.take()
    assert len(data) == 4 * size
    # The kernel took two messages and one byte of the third.
    q.written(tracked, len(data), 2 * size - 1)
    q.push(_frame(9, 900, b""), [], 0, 9, 900)  # queued behind, never written
    assert q.fail() == [(3 * size, 2, 102), (4 * size, 3, 103), (HEADER.size, 9, 900)]
    assert not q and q.queued == 0
    assert q.fail() == []  # reported once


def test_a_batch_that_reached_no_kernel_is_tracked_whole() -> None:
    q = LinkQueue()
    q.push(_frame(1, 1, b"z"), [b"z"], 1, 1, 1)
    q.push(_frame(2, 2, b"z"), [b"z"], 1, 2, 2)
    (data,), tracked = q.take()
    q.written(tracked, len(data), None)  # paused, or the write failed
    assert [t[1:] for t in q.fail()] == [(1, 1), (2, 2)]


def test_drained_forgets_what_was_in_flight() -> None:
    q = LinkQueue()
    q.push(_frame(1, 1, b"w" * 50), [b"w" * 50], 50, 1, 1)
    (data,), tracked = q.take()
    q.written(tracked, len(data), len(data))
    q.drained()  # resume_writing: the transport passed it all to the kernel
    q.push(_frame(2, 2, b""), [], 0, 2, 2)
    assert [t[1:] for t in q.fail()] == [(2, 2)]
