"""What a worker's accept socket carries (msrpd/workers/migrate/wire.py): each kind of
datagram decodes to what was encoded, one item per descriptor, and every malformed one is
refused as a whole (its descriptors are then closed: test_balance.py). A moved connection's
state survives the trip, and a state too large to be worth a move is not encoded."""

from __future__ import annotations

import pytest

from msrpd.workers.connstats import ConnStats
from msrpd.workers.handoff import make_conid
from msrpd.workers.migrate.wire import (
    MAX_STATE,
    Kind,
    Moved,
    MoveState,
    Passed,
    WireError,
    decode,
    encode_batch,
    encode_moved,
    encode_passed,
)

from .migrating import Conn


def state(**changes: object) -> MoveState:
    fields: dict[str, object] = {
        "old": 1 << 60 | 7,
        "came_from": (3, 2),
        "listen": "tcp:127.0.0.1:2855",
        "sessions": ["s1", "s2"],
        "meta": {"s1": ("alice", 1700000000.5)},
        "counts": (1, 2, 30, 40),
        "opened": 12.5,
        "active": 14.25,
        "moves": 2,
        "handovers": 1,
        "held": b"MSRP a SEND\r\nTo-Path: x\r\n",
        "proven": True,
        "counted": False,
    }
    fields.update(changes)
    return MoveState(**fields)  # type: ignore[arg-type]


def test_each_kind_decodes_to_what_was_encoded() -> None:
    assert decode(encode_passed("tcp:[::1]:2855"), 1) == [Passed("tcp:[::1]:2855")]
    assert encode_passed("x")[:1] == Kind.PASSED.value == b"A"
    assert decode(encode_moved(b"m1"), 1) == [Moved(b"m1")]
    messages = [b'{"old": 1}\n', b"", b'{"old": 2}\nMSRP a SEND\r\n']
    assert decode(encode_batch(messages), 3) == [Moved(m) for m in messages]


@pytest.mark.parametrize(
    ("data", "fds", "why"),
    [
        (b"Xwhat", 1, "unknown message"),
        (b"", 1, "unknown message"),
        (encode_passed("tcp:127.0.0.1:1"), 2, "2 connections in one message"),
        (encode_moved(b"m"), 3, "3 connections in one message"),
        (encode_batch([b"a", b"b"]), 3, "2 states for 3 connections"),
        (encode_batch([]), 1, "0 states for 1 connections"),
    ],
)
def test_a_datagram_that_does_not_fit_its_descriptors_is_refused(
    data: bytes, fds: int, why: str
) -> None:
    with pytest.raises(WireError, match=why):
        decode(data, fds)


def test_a_truncated_batch_is_refused() -> None:
    datagram = encode_batch([b'{"old": 1}\n', b'{"old": 2}\nheld'])
    for cut in (3, 6, len(datagram) - 2):
        with pytest.raises(WireError, match="truncated"):
            decode(datagram[:cut], 2)


def test_a_move_state_round_trips_with_the_held_bytes_after_its_line() -> None:
    original = state()
    message = original.encode()
    assert message is not None
    head, _, held = message.partition(b"\n")
    assert held == original.held and b"\n" not in head
    assert MoveState.decode(message) == original
    # Held bytes may hold line ends of their own: only the first one ends the state.
    multi = state(held=b"a\nb\r\n\n")
    encoded = multi.encode()
    assert encoded is not None and MoveState.decode(encoded).held == b"a\nb\r\n\n"


def test_a_state_over_max_state_is_not_worth_a_move() -> None:
    many = [f"session-{i:06d}" for i in range(MAX_STATE // 16)]
    assert state(sessions=many).encode() is None
    assert state(sessions=many[:100]).encode() is not None


@pytest.mark.parametrize(
    "message",
    [b"{not json", b'{"old": 1}\n', b'["a"]\n', b'{"old": "x"}', b""],
)
def test_a_bad_move_message_is_refused(message: bytes) -> None:
    with pytest.raises(WireError, match="a bad move message"):
        MoveState.decode(message)


def test_what_travels_with_a_connection_arrives_on_the_new_one() -> None:
    stats = ConnStats(5, 6, 700, 800, 1.0, 2.0, ["s1"], {"s1": ("bob", 5.5)})
    stats.proven, stats.counted = True, True  # [limits]: off probation, counted by address
    old = Conn(make_conid(0, 1, 7), None, stats=stats)
    old.migration.moves, old.migration.handovers = 1, 0
    message = MoveState.of(old, b"MSRP half", (0, 1), handover=True).encode()
    assert message is not None
    state = MoveState.decode(message)
    new = Conn(make_conid(1, 1, 3), None, stats=ConnStats())  # a fresh record
    state.restore(new)
    assert (state.old, state.came_from, state.held) == (old.conid, (0, 1), b"MSRP half")
    got = new.stats
    assert got is not stats  # a record of its own, with what travelled
    assert got.sessions == ["s1"] and got.session_meta == {"s1": ("bob", 5.5)}
    assert (got.frames_in, got.frames_out, got.bytes_in, got.bytes_out) == (5, 6, 700, 800)
    assert (got.proven, got.counted) == (True, True)
    assert (got.opened, got.last_active) == (1.0, 2.0)
    assert (new.migration.moves, new.migration.handovers) == (2, 1)  # a reload's move
    assert new.migration.colocated == 1
    assert new.migration.former == (old.conid,)


def test_former_ids_accumulate_over_moves() -> None:
    """A response to a request sent to a connection before it moved still matches its
    transaction (transactions.py): each move adds the id it had."""
    first = Conn(make_conid(0, 1, 7), None, stats=ConnStats())
    second = Conn(make_conid(1, 1, 3), None, stats=ConnStats())
    third = Conn(make_conid(0, 1, 9), None, stats=ConnStats())
    for old, new in ((first, second), (second, third)):
        message = MoveState.of(old, b"", (0, 1)).encode()
        assert message is not None
        MoveState.decode(message).restore(new)
    assert third.migration.former == (first.conid, second.conid)
