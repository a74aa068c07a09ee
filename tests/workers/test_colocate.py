"""Colocation and the handover's I/O (msrpd/workers/migrate/colocate.py, handoverio.py,
lock.py) with real TCP connections, real fd passing and a real heartbeat table; the worker
around them (its connection table and handoff links) is a recording stand-in.

A connection that relays STREAK frames in a row to one other worker is moved there when that
is fair, or its peer is asked to come here (PULL) when that is; a move takes the relay-wide
lock, sends the socket with its state and held bytes, forgets the connection here and starts
the handover, which the new owner takes up; nothing moves while another move is out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.protocol import Frame, FrameReader
from msrpd.shm import Counter, Heartbeats, WorkerState
from msrpd.workers.handoff import Handoff, HandoffFlags, HandoffKind, make_conid
from msrpd.workers.migrate.colocate import (
    BIG_FRAME,
    MAX_CARRY,
    MAX_MOVES,
    PULL_TRIES,
    PULL_WAIT,
    QUIESCE,
    STREAK,
    Mover,
    ready_to_move,
)
from msrpd.workers.migrate.handover import NEW_ID
from msrpd.workers.migrate.state import MigrationState, Worker, worker_token
from msrpd.workers.migrate.wire import MoveState

from .migrating import Conn, Net, Side, conn_on, free_elsewhere, held_elsewhere

ME, PEER = (0, 1), (1, 1)


@pytest.fixture
def pair(tmp_path: Path, prefix: str) -> Iterator[tuple[Side, Side, Heartbeats, Net]]:
    hb = Heartbeats.create(prefix, 2)
    hb.claim(0, 100, slot=0, generation=1)
    hb.claim(1, 101, slot=1, generation=1)
    loop, idle = asyncio.new_event_loop(), asyncio.new_event_loop()
    net = Net(loop)
    a, b = Side(tmp_path, ME, 0, hb, idle), Side(tmp_path, PEER, 1, hb, idle)
    try:
        yield a, b, hb, net
    finally:
        a.close()
        b.close()
        net.close()
        loop.close()
        idle.close()
        hb.region.close()
        hb.region.unlink()


def _streak(mover: Mover[Conn], conn: Conn, owner: Worker, peer: int) -> None:
    for _ in range(STREAK):
        mover.note_remote(conn, owner, peer)


def _running(hb: Heartbeats, **conns: int) -> None:
    hb.beat(0, WorkerState.RUNNING, conns["a"])
    hb.beat(1, WorkerState.RUNNING, conns["b"])


PEER_CONN = make_conid(1, 1, 9)
LINK = object()
"""The handoff link a control message came on."""


def test_a_streak_to_one_worker_marks_the_connection_to_move(pair) -> None:  # type: ignore[no-untyped-def]
    mover = pair[0].mover
    state = MigrationState(movable=True)
    conn = Conn(1, None, migration=state)
    for _ in range(STREAK - 1):
        mover.note_remote(conn, PEER, PEER_CONN)
    assert state.move_to is None and state.streak == STREAK - 1 and state.others_at == 0.0
    mover.note_remote(conn, PEER, PEER_CONN)
    assert state.move_to == (PEER, PEER_CONN)
    mover.note_remote(conn, (2, 1), 5)  # a third worker: the streak starts again
    assert state.streak_owner == (2, 1) and state.streak == 1 and state.others_at > 0
    mover.colocate = False  # `[core] balance = false`: no streaks
    mover.note_remote(conn, (2, 1), 5)
    assert state.streak == 1


def test_ready_to_move_says_what_to_carry() -> None:
    conn = Conn(1, None, carry=b"MSRP a SEND\r\n")
    assert ready_to_move(conn, stopping=False) == b"MSRP a SEND\r\n"
    assert ready_to_move(conn, stopping=True) is None  # a stop reads no more
    conn.carry = b"x" * (MAX_CARRY + 1)  # a large frame half read: it waits
    assert ready_to_move(conn, stopping=False) is None
    conn.carry = None  # mid-frame, writing, paused...: the connection says no
    assert ready_to_move(conn, stopping=False) is None
    assert ready_to_move(Conn(1, None, migration=MigrationState()), stopping=False) is None


def test_a_fair_move_sends_the_socket_and_the_new_owner_takes_it_up(pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b, hb, net = pair
    tmp = tmp_path
    _running(hb, a=2, b=1)
    a.balancer.refresh()
    conn, client = conn_on(a, net)
    conn.carry = b"MSRP half"
    client.sendall(b" a frame")  # unread: it waits in the socket for the new owner
    _streak(a.mover, conn, PEER, PEER_CONN)
    conn.migration.others_at = -10.0
    a.mover.consider(conn)
    # Sent: forgotten here, counted, the lock held until RELEASE, MOVING on the link.
    assert conn.conid not in a.host.conns and conn.closed and conn.migration.passed
    assert a.host.counters.values[Counter.conns_moved] == 1
    assert a.host.controls == [(PEER, HandoffKind.MOVING, conn.conid, 0, b"")]
    assert not free_elsewhere(tmp) and a.mover.busy() and a.lock.out == 1
    assert a.mover.deliver(conn.conid, b"queued", 0, "src")  # until MOVED
    # The new owner: the socket with the state and held bytes.
    assert b.inbox.receive() == 1
    ((moved, sock),) = b.host.served
    assert moved.stats.sessions == ["sess-a"] and moved.migration.moves == 1
    assert (moved.stats.frames_in, moved.stats.bytes_out, moved.stats.opened) == (5, 800, 1.0)
    assert moved.arrival is not None and moved.arrival.carried == b"MSRP half"
    sock.settimeout(5)
    assert sock.recv(100) == b" a frame"
    assert moved.arrival.on_taken_over is not None
    moved.arrival.on_taken_over(moved)  # connection_made, once registered
    assert moved.calls == ["hold_reading"]  # MOVING has not come yet
    ((to, kind, old, _, payload),) = b.host.controls
    assert (to, kind, old) == (ME, HandoffKind.MOVED, conn.conid)
    # The old owner hears MOVED: forwards its queue, releases (no third worker to fence).
    a.handover.on_control(Handoff(kind, old, 0, payload), LINK)
    assert a.host.frames == [
        (Path("/handoff-1-1"), NEW_ID.unpack(payload)[0], 1, b"queued", HandoffFlags.FORWARDED)
    ]
    assert a.host.controls[-1][1] is HandoffKind.RELEASE
    assert not a.mover.busy() and free_elsewhere(tmp) and a.lock.out == 0  # the lock went back
    b.handover.on_control(Handoff(HandoffKind.MOVING, old), LINK)
    assert moved.release_link is LINK  # RELEASE comes on the link MOVING came on
    b.handover.on_control(Handoff(HandoffKind.RELEASE, moved.conid), LINK)
    assert moved.calls == ["hold_reading", "start_reading"]  # released: not in its conns
    b.host.conns[moved.conid] = moved
    b.handover.tick()
    assert not b.mover.busy()


def test_when_moving_ours_is_unfair_the_peer_is_asked_to_come(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b, hb, net = pair
    _running(hb, a=1, b=3)
    a.balancer.refresh()
    conn, _client = conn_on(a, net)
    _streak(a.mover, conn, PEER, PEER_CONN)
    conn.migration.others_at = -10.0
    a.mover.consider(conn)
    assert a.host.controls == [(PEER, HandoffKind.PULL, PEER_CONN, worker_token(*ME), b"")]
    assert conn.conid in a.host.conns and conn.migration.move_to is None
    a.host.controls.clear()
    _streak(a.mover, conn, PEER, PEER_CONN)
    a.mover.consider(conn)  # within RETRY of the last attempt: nothing
    assert a.host.controls == []


def test_nothing_moves_too_often_too_soon_or_under_another_move(pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b, hb, net = pair
    _running(hb, a=3, b=0)
    a.balancer.refresh()
    conn, _client = conn_on(a, net)
    a.mover.note_remote(conn, (2, 1), 5)
    _streak(a.mover, conn, PEER, PEER_CONN)
    a.mover.consider(conn)  # it relayed to a third worker less than a second ago
    assert a.host.controls == [] and conn.conid in a.host.conns
    conn.migration.moves = MAX_MOVES
    _streak(a.mover, conn, PEER, PEER_CONN)
    conn.migration.others_at = -10.0
    a.mover.consider(conn)
    assert a.host.controls == []
    conn.migration.handovers = 1  # a reload's move does not count
    with held_elsewhere(tmp_path):  # another worker is moving one
        _streak(a.mover, conn, PEER, PEER_CONN)
        a.mover.consider(conn)
    assert conn.conid in a.host.conns and conn.migration.move_retry_at == 0.0  # soon again
    _streak(a.mover, conn, PEER, PEER_CONN)
    a.mover.consider(conn)
    assert conn.conid not in a.host.conns
    assert MoveState.decode(_received(b)).moves == MAX_MOVES + 1


def _received(worker: Side) -> bytes:
    messages: list[bytes] = []
    worker.inbox.adopt_moved = lambda sock, message: (sock.close(), messages.append(message))  # type: ignore[assignment, func-returns-value]
    assert worker.inbox.receive() == 1
    return messages[0]


def _asked_for(pair) -> tuple[Conn, Handoff, socket.socket]:  # type: ignore[no-untyped-def]
    """A connection on worker a (and its client's socket), equal counts, and the PULL
    worker b sends for it."""
    a, _b, hb, net = pair
    _running(hb, a=1, b=1)
    a.balancer.refresh()
    conn, client = conn_on(a, net)
    return conn, Handoff(HandoffKind.PULL, conn.conid, worker_token(*PEER)), client


def test_a_pull_is_answered_with_a_move_when_fair(pair) -> None:  # type: ignore[no-untyped-def]
    a, b, hb, _net = pair
    conn, pull, _client = _asked_for(pair)
    conn.migration.moves = MAX_MOVES
    a.mover.on_control(pull, LINK)  # moved too often
    assert conn.conid in a.host.conns
    conn.migration.moves = 0
    _running(hb, a=1, b=2)
    a.mover.on_control(pull, LINK)  # they hold more than we do
    assert conn.conid in a.host.conns
    _running(hb, a=1, b=1)
    a.mover.on_control(pull, LINK)
    assert conn.conid not in a.host.conns
    assert MoveState.decode(_received(b)).old == conn.conid


def _big_frame(size: int) -> Frame:
    body = b"x" * size
    data = (
        b"MSRP t1 SEND\r\nTo-Path: msrp://r:1/t;tcp msrp://b:2/b;tcp\r\n"
        b"From-Path: msrp://a:3/a;tcp\r\nMessage-ID: m1\r\n"
        b"Byte-Range: 1-%d/%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n-------t1$\r\n"
        % (size, size, body)
    )
    reader = FrameReader()
    reader.receive_data(data)
    (frame,) = list(reader.events())
    assert isinstance(frame, Frame)
    return frame


def test_a_big_frame_is_a_streak_by_itself(pair) -> None:  # type: ignore[no-untyped-def]
    mover = pair[0].mover
    state = MigrationState(movable=True)
    conn = Conn(1, None, migration=state)
    mover.note_remote(conn, PEER, PEER_CONN, _big_frame(BIG_FRAME - 200))
    assert state.move_to is None and state.streak == 1  # a frame like any other
    mover.note_remote(conn, PEER, PEER_CONN, _big_frame(BIG_FRAME))
    assert state.move_to == (PEER, PEER_CONN)
    mover.note_remote(conn, (2, 1), 5)  # another worker: the wish goes with the streak
    assert state.move_to is None and state.streak == 1


def _wishing(pair, mine: int, theirs: int) -> tuple[Conn, socket.socket]:  # type: ignore[no-untyped-def]
    """A connection on worker a (and its client's socket) that wants to join PEER_CONN on
    worker b, quiet towards any third worker, the workers holding `mine` and `theirs`."""
    a, _b, hb, net = pair
    _running(hb, a=mine, b=theirs)
    a.balancer.refresh()
    conn, client = conn_on(a, net)
    conn.migration.others_at = -10.0
    _streak(a.mover, conn, PEER, PEER_CONN)
    return conn, client


def test_a_move_waits_for_a_frames_end_with_the_wish_kept(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair[:2]
    conn, _client = _wishing(pair, 2, 1)
    conn.carry = b"x" * (MAX_CARRY + 1)  # a big frame half read
    a.mover.consider(conn)
    conn.carry = None  # a streamed frame going on, or reading paused
    a.mover.consider(conn)
    assert conn.migration.move_to == (PEER, PEER_CONN) and a.host.controls == []
    assert conn.conid in a.host.conns
    conn.carry = b"MSRP b"  # a read that ended a frame with little of the next one
    a.mover.consider(conn)
    assert conn.conid not in a.host.conns and conn.migration.move_to is None
    assert MoveState.decode(_received(b)).held == b"MSRP b"


def test_at_a_streamed_frames_end_the_peer_is_asked_when_ours_holds_too_much(pair) -> None:  # type: ignore[no-untyped-def]
    a = pair[0]
    conn, _client = _wishing(pair, 1, 1)
    conn.migration.streamed = True  # the wish came from a streamed frame
    conn.carry = b"x" * (MAX_CARRY + 1)  # its end, and much of the next frame, read
    a.mover.consider(conn)
    assert a.host.controls == [(PEER, HandoffKind.PULL, PEER_CONN, worker_token(*ME), b"")]
    assert conn.conid in a.host.conns and conn.migration.move_to is None


def test_a_pull_that_cannot_be_answered_yet_is_tried_again(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair[:2]
    conn, pull, _client = _asked_for(pair)
    conn.carry = None  # bytes still to write to it: a receiver of a big message
    a.mover.on_control(pull, LINK)
    assert conn.conid in a.host.conns
    conn.carry = b""  # written out
    a.host.loop.run_until_complete(asyncio.sleep(PULL_WAIT * 3))
    assert conn.conid not in a.host.conns
    if not b.host.served:  # taken in by the loop's reader already, or still queued
        b.inbox.receive()
    ((moved, sock),) = b.host.served
    sock.close()
    assert moved.migration.moves == 1


def test_a_pull_is_not_tried_again_once_a_connection_moved_meanwhile(pair) -> None:  # type: ignore[no-untyped-def]
    a = pair[0]
    conn, pull, _client = _asked_for(pair)
    conn.carry = None
    a.mover.on_control(pull, LINK)
    a.handover.moves += 1  # its peer, say, moved here meanwhile: they stay together
    conn.carry = b""
    a.host.loop.run_until_complete(asyncio.sleep(PULL_WAIT * PULL_TRIES * 2))
    assert conn.conid in a.host.conns


def test_a_sender_of_big_frames_pauses_while_its_peer_is_asked_to_come(pair) -> None:  # type: ignore[no-untyped-def]
    a = pair[0]
    conn, _client = _wishing(pair, 1, 1)
    conn.migration.big = True  # the wish came from a big frame
    conn.carry = b"x" * (MAX_CARRY + 1)
    conn.migration.streamed = True
    a.mover.consider(conn)
    assert a.host.controls[-1][1] is HandoffKind.PULL
    assert conn.calls == ["block"]  # the peer writes out what it holds meanwhile
    a.host.loop.run_until_complete(asyncio.sleep(QUIESCE * 2))
    assert conn.calls == ["block", "unblock"]


def test_while_another_worker_moves_a_big_sender_asks_once_per_retry(  # type: ignore[no-untyped-def]
    pair, tmp_path: Path
) -> None:
    """The move lock held elsewhere (another pair's move, a reload's batch): a sender of big
    frames asks for its peer once and pauses once, not after each of its big frames."""
    a = pair[0]
    conn, _client = _wishing(pair, 1, 1)  # equal counts: it would move itself
    conn.carry = b""  # between frames
    with held_elsewhere(tmp_path):
        for _ in range(8):  # eight big frames, one a read
            a.mover.note_remote(conn, PEER, PEER_CONN, _big_frame(BIG_FRAME))
            a.mover.consider(conn)
    pulls = [c for c in a.host.controls if c[1] is HandoffKind.PULL]
    assert pulls == [(PEER, HandoffKind.PULL, PEER_CONN, worker_token(*ME), b"")]
    assert conn.calls.count("block") == 1


def test_a_wish_from_before_a_move_in_is_dropped(pair) -> None:  # type: ignore[no-untyped-def]
    """A relays big frames to B on worker b; B is moved here (a PULL answered) while A's
    wish to join B at b is still kept (the move out was busy). Once B's handover is done, a
    read of A's that routes no frame must not send A to b, where B no longer is."""
    a, b, hb, net = pair
    _running(hb, a=1, b=2)
    a.balancer.refresh()
    b.balancer.refresh()
    alice, _ca = conn_on(a, net)
    bob, _cb = conn_on(b, net)
    alice.migration.others_at = -10.0
    a.mover.note_remote(alice, PEER, bob.conid, _big_frame(BIG_FRAME))
    b.mover.on_pull(Handoff(HandoffKind.PULL, bob.conid, worker_token(*ME)))
    assert bob.conid not in b.host.conns
    assert a.inbox.receive() == 1
    ((moved, sock),) = a.host.served
    assert moved.arrival is not None and moved.arrival.on_taken_over is not None
    moved.arrival.on_taken_over(moved)
    alice.carry = b""
    a.mover.consider(alice)  # busy with Bob's move in: the wish is kept
    assert alice.migration.move_to == (PEER, bob.conid)
    ((_to, kind, old, _, payload),) = a.host.controls
    b.handover.on_control(Handoff(kind, old, 0, payload), LINK)
    a.handover.on_control(Handoff(HandoffKind.MOVING, old), LINK)
    a.handover.on_control(Handoff(HandoffKind.RELEASE, moved.conid), LINK)
    a.host.conns[moved.conid] = moved
    a.handover.tick()
    assert not a.mover.busy()
    _running(hb, a=2, b=1)
    a.mover.consider(alice)  # a read of a few bytes of the next frame's head
    assert alice.conid in a.host.conns and alice.migration.move_to is None
    sock.close()


@pytest.mark.parametrize("why", ["unmovable", "stopping"])
def test_a_pull_for_a_connection_that_cannot_move_is_not_tried_again(  # type: ignore[no-untyped-def]
    pair, why: str
) -> None:
    """Asked for a TLS connection or a link to another relay (not movable), or during a
    stop: one attempt, no retries (they could only fail the same way)."""
    a, _b, hb, net = pair
    _running(hb, a=1, b=1)
    a.balancer.refresh()
    conn, _client = conn_on(a, net)
    if why == "unmovable":
        conn.migration = MigrationState(movable=False)
    else:
        a.host.stopping = True
    tries = []
    move = a.mover.move
    a.mover.move = lambda c, o: (tries.append(c), move(c, o))[1]  # type: ignore[method-assign]
    a.mover.on_control(Handoff(HandoffKind.PULL, conn.conid, worker_token(*PEER)), LINK)
    a.host.loop.run_until_complete(asyncio.sleep(PULL_WAIT * 4))
    assert tries == [conn] and conn.conid in a.host.conns
