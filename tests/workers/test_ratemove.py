"""A connection's [limits] rate buckets move with it (workers/limits.py, ratelimit.py,
migrate/wire.py): the buckets made for it on the new worker start from the levels the old
ones had, not full, or each move would give a sender a fresh burst (real shared tables;
connections and loop stood in for, as in test_limits.py)."""

from __future__ import annotations

import json
import math
import time

import pytest

from msrpd.shm import AddrTable, Cmap, UserSessions
from msrpd.workers.migrate.state import MigrationState
from msrpd.workers.migrate.wire import MoveState, WireError
from msrpd.workers.ratelimit import ReadRate, TokenBucket

from .migrating import Conn as MovingConn
from .test_limits import Conn, charge_frame, guard

Tables = tuple[AddrTable, UserSessions, Cmap]
LIMITS = {"session_frame_rate": 10.0, "session_byte_rate": 1e6, "user_frame_rate": 4.0}


def _level(bucket: TokenBucket | None) -> float:
    assert bucket is not None
    return bucket.level(time.monotonic())


def _moved(conid: int, user: str, levels: tuple[float | None, ...]) -> Conn:
    conn = Conn(conid, migration=MigrationState(moves=1))
    conn.stats.session_meta[f"s{conid}"] = (user, 0.0)
    conn.stats.rate_levels = levels
    return conn


def test_a_moved_connection_starts_from_the_levels_it_left_with(tables: Tables) -> None:
    g, _ = guard(tables, rate_burst=1.0, **LIMITS)
    conn = _moved(1, "alice", (2.0, 5e5, -1.5, None))
    assert g.admit(conn)
    rate = conn.intake.rate
    assert rate is not None
    # Full would be 10 frames, 1e6 bytes and 4 of the user's frames; a little refill since.
    assert 2.0 <= _level(rate.frames) < 2.5
    assert 5e5 <= _level(rate.bytes) < 5e5 + 1e5
    assert -1.5 <= _level(rate.user_frames) < -1.0  # still in debt: its next frame waits
    assert conn.stats.rate_levels == ()  # taken once
    charge_frame(g, conn, rate)
    assert conn.blocked == {rate}  # throttled at once, as it would have been where it was


def test_a_users_bucket_shared_here_keeps_its_own_level(tables: Tables) -> None:
    g, _ = guard(tables, rate_burst=1.0, **LIMITS)
    here = _moved(1, "alice", ())  # came with no levels (an older worker): buckets full
    assert g.admit(here)
    assert here.intake.rate is not None and _level(here.intake.rate.user_frames) == 4.0
    moved = _moved(2, "alice", (0.5, None, 0.0, None))
    assert g.admit(moved)
    rate = moved.intake.rate
    assert rate is not None and rate.user_frames is here.intake.rate.user_frames
    assert _level(rate.frames) < 1.0  # its own bucket: from its level
    assert _level(rate.user_frames) == 4.0  # the share of alice's other connection here


def test_levels_travel_through_the_move_message(tables: Tables) -> None:
    """A connection that spent 7 of its 10 frames' burst arrives with 3, through the real
    move message (encode, decode, restore) and the new worker's admit."""
    g, _ = guard(tables, rate_burst=1.0, **LIMITS)
    old = Conn(1)
    assert g.admit(old)
    rate = old.intake.rate
    assert rate is not None
    for _ in range(7):
        charge_frame(g, old, rate)
    mover = MovingConn(1, None)
    mover.rate_levels = lambda: rate.levels(time.monotonic())  # type: ignore[method-assign]
    message = MoveState.of(mover, b"", (0, 1)).encode()
    assert message is not None
    new = Conn(9, migration=MigrationState(moves=1))
    MoveState.decode(message).restore(new)  # type: ignore[arg-type]
    assert g.admit(new)
    assert new.intake.rate is not None and 3.0 <= _level(new.intake.rate.frames) < 3.5


@pytest.mark.parametrize(
    "rates",
    [
        [math.inf, None, None, None],
        [None, -math.inf, None, None],
        [1.0, 2.0, 3.0],
        "1234",
        [1, "x", None, None],
        5,
    ],
)
def test_a_move_message_with_bad_levels_is_refused(rates: object) -> None:
    good = MoveState(1, (0, 1), "tcp:127.0.0.1:2855", [], {}, (0, 0, 0, 0), 0.0, 0.0, 1, 1, b"")
    encoded = good.encode()
    assert encoded is not None
    head, _, held = encoded.partition(b"\n")
    state = json.loads(head)
    state["rates"] = rates
    with pytest.raises(WireError):
        MoveState.decode(json.dumps(state).encode() + b"\n" + held)
    del state["rates"]  # from a worker that carried none: buckets made full, as before
    assert MoveState.decode(json.dumps(state).encode() + b"\n" + held).rates == ()


def test_levels_are_each_buckets_tokens_now() -> None:
    now = time.monotonic()
    rate = ReadRate(TokenBucket(10.0, 10.0, now), None)
    rate.user_bytes = TokenBucket(100.0, 50.0, now)
    rate.charge_frame(now)
    rate.charge_read(80, now)
    assert rate.levels(now) == (9.0, None, None, -30.0)
