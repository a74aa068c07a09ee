"""Colocation: move a connection to the worker its peer is on, so a pair is served by one process.

Why (issue 7): a pair split over two workers costs each relayed frame two handoffs (the SEND
one way, its 200 back): about 30 instead of 22 us of relay CPU per 10 KiB frame, and two
more process wake-ups of latency. Kamailio has no such cost: any of its processes writes to
any connection. Here the connection moves instead (DESIGN §2: fd passing where it helps).

When: a connection that relays STREAK frames in a row to connections of one other worker (a
client talking to its peer) is moved there, or the peer is asked to come here (PULL),
whichever keeps the two workers' connection counts within two of each other. One move at a
time in the whole relay (an flock on run_dir/move.lock, held from the socket's sending to
RELEASE), and a worker that still holds frames back for a connection it took over moves
nothing: two ends of a pair moving at once could let a frame pass an earlier one. Only plain TCP
connections accepted by a worker (TLS state lives in this process's SSL object; outbound
links to other relays stay), only between frames, with nothing waiting to be written to
it, no streamed frame going in or out, not paused by flow control, at most MAX_MOVES times.

What happens once the socket has left is handover.py's. A retiring worker (reload) uses the
same sending through retire.py, many connections under one hold of the lock.
Colocation runs only with `[core] balance = true`; moving on reload does not depend on it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from ..rundir import accept_path, move_lockfile
from ..shm import Counter
from .handoff import Handoff, HandoffKind
from .handover import Handover, MovedSink, token_worker, worker_token

if TYPE_CHECKING:
    from .balance import AcceptBalancer
    from .connapi import Connection
    from .context import WorkerContext
    from .gone import Sent
    from .ports import Blockable

__all__ = ["Mover"]

logger = logging.getLogger(__name__)

STREAK = 16
"""Frames in a row relayed to one other worker before the connection moves."""
MAX_MOVES = 3
"""A connection moves at most this often (a client with peers everywhere stays put)."""
RETRY = 1.0
"""Seconds between two attempts for one connection."""
MAX_CARRY = 1 << 16
"""A connection whose reader holds more than this (a large frame half read) waits."""
MAX_STATE = 1 << 15
"""Bytes of JSON state (session ids, mostly) a moving connection may carry."""
QUIET_OTHERS = 1.0
"""Seconds without relaying to a third worker before a connection may move (handover.py)."""


class Mover:
    """This worker's side of colocation: when to move, and sending the socket."""

    def __init__(
        self,
        ctx: WorkerContext,
        balancer: AcceptBalancer,
        new_conn: Callable[[str], Connection],
    ) -> None:
        self.ctx = ctx
        self.balancer = balancer
        path = move_lockfile(ctx.settings.core.run_dir)
        self._lockfd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.me = (ctx.ident.slot, ctx.ident.generation)
        self.colocate = ctx.settings.core.balance
        self.handover = Handover(ctx, new_conn, self._moved)
        self._out = 0
        """Moves this worker sent that are not over yet; the lock is held while any are."""
        self.on_free: Callable[[], None] | None = None
        """Called when the last of them is over (retire.py sends the next batch then)."""

    # -- deciding -----------------------------------------------------------------------------

    def note_remote(self, source: Connection, owner: tuple[int, int], conid: int) -> None:
        """relay() from `source` went to connection `conid` of worker `owner`."""
        if not self.colocate:
            return
        if source.streak_owner == owner:
            source.streak += 1
            if source.streak >= STREAK:
                source.move_to = (owner, conid)
        else:
            if source.streak_owner is not None:
                source.others_at = time.monotonic()  # relayed to a third worker
            source.streak_owner, source.streak = owner, 1

    def consider(self, conn: Connection) -> None:
        """After `conn`'s read: move it to, or pull its peer from, the worker it relays to."""
        target = conn.move_to
        conn.move_to, conn.streak, conn.streak_owner = None, 0, None
        now = time.monotonic()
        if target is None or now < conn.move_retry_at or _colocated(conn) >= MAX_MOVES:
            return
        if now - conn.others_at < QUIET_OTHERS or self.busy():
            return
        conn.move_retry_at = now + RETRY
        owner, peer = target
        index = self.balancer.index_of(owner)
        if index is None:
            return  # not a RUNNING worker of our generation
        theirs, mine = self.ctx.shm.heartbeats.conns(index), len(self.ctx.conns)
        # Moving ours there is fair if they hold no more than we do, pulling theirs here if we
        # hold no more than they do. With equal counts, ours goes if it can: a connection
        # with bytes still waiting to be written to it (a flooded receiver) cannot.
        if theirs <= mine and self.move(conn, owner):
            logger.debug("connection %x relays to %x: moved it there", conn.conid, peer)
        elif mine <= theirs:
            logger.debug("connection %x relays to %x: asking for that one", conn.conid, peer)
            self.ctx.handoffs.control(owner, HandoffKind.PULL, peer, worker_token(*self.me))

    def lock(self) -> bool:
        """Take the relay-wide move lock, without waiting; False if another worker holds it."""
        try:
            fcntl.lockf(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another worker is moving one
        return True

    def unlock(self) -> None:
        """Give the lock back (only when no move sent under it is unfinished)."""
        fcntl.lockf(self._lockfd, fcntl.LOCK_UN)

    def _moved(self) -> None:
        """One move this worker sent is over (released or failed)."""
        self._out -= 1
        if self._out <= 0:
            self._out = 0
            self.unlock()
            if self.on_free is not None:
                self.on_free()

    def close(self) -> None:
        os.close(self._lockfd)

    def busy(self) -> bool:
        """A move out or in is unfinished: one at a time per worker, so two connections
        never move at once through one worker (their frames could pass each other)."""
        return self.handover.busy()

    def movable(self, conn: Connection) -> bytes | None:
        """What conn's reader holds, if conn can move now; else None."""
        transport = conn.wire.transport
        out = conn.out
        if (
            not conn.movable
            or self.ctx.stop.stopping  # a stop reads no more: nothing to gain, frames to lose
            or conn.closed
            or transport is None
            or out.close_when_flushed
            or conn.stream_sink is not None
            or out.gate.owner is not None
            or out.gate.held
            or conn.intake.blockers
            or out.flow.blocked
            or conn.holding is not None
            or conn.reading_held
            or conn.carried
            or out.pending
            or transport.get_write_buffer_size()
        ):
            return None
        held = conn.reader.detach()
        return held if held is not None and len(held) <= MAX_CARRY else None

    def move(self, conn: Connection, owner: tuple[int, int]) -> bool:
        """Send `conn` to worker `owner`; False when it stays here."""
        ctx = self.ctx
        ctx.batch.flush_now()
        held = self.movable(conn)
        transport = conn.wire.transport
        if held is None or transport is None:
            return False
        if not self.lock():
            conn.move_retry_at = 0.0  # only another move was in the way: try again soon
            return False
        try:
            moved = self._send(conn, owner, held, transport)
        except BaseException:
            self.unlock()
            raise
        if not moved:
            self.unlock()
        return moved

    def _send(self, conn: Connection, owner: tuple[int, int], held: bytes, transport: Any) -> bool:
        message = self.message(conn, held)
        if message is None:
            return False  # thousands of sessions: not worth a move
        transport.pause_reading()
        path = accept_path(self.ctx.settings.core.run_dir, *owner)
        if not self.balancer.send_socket(transport, path, b"M" + message):
            transport.resume_reading()
            return False
        self.sent_away(conn, owner)
        return True

    def message(self, conn: Connection, held: bytes, *, handover: bool = False) -> bytes | None:
        """What the new owner needs to serve `conn` (handover.adopt): its state, then the
        bytes its reader held; None when the state is over MAX_STATE. `handover`: a reload
        moves it (not counted against MAX_MOVES)."""
        stats = conn.stats
        state = {
            "old": conn.conid,
            "from": list(self.me),
            "listen": conn.wire.local_sock,
            "sessions": stats.sessions,
            "meta": stats.session_meta,
            "counts": [stats.frames_in, stats.frames_out, stats.bytes_in, stats.bytes_out],
            "opened": stats.opened,
            "active": stats.last_active,  # monotonic: one clock for every process (Linux)
            "moves": conn.moves + 1,
            "handovers": conn.handovers + handover,
        }
        head = json.dumps(state).encode()
        return None if len(head) > MAX_STATE else head + b"\n" + held

    def sent_away(
        self, conn: Connection, owner: tuple[int, int], *, fence_first: bool = False
    ) -> None:
        """`conn`'s socket is worker `owner`'s now (its reading was paused before it was
        sent): forget it here without closing the session, and start the handover."""
        ctx = self.ctx
        transport = conn.wire.transport
        conn.passed = conn.closed = True
        ctx.conns.pop(conn.conid, None)
        ctx.shm.heartbeats.set_conns(ctx.ident.index, len(ctx.conns))
        ctx.counters.add(Counter.conns_moved)
        self._out += 1
        self.handover.sent(conn.conid, owner, fence_first=fence_first)
        if transport is not None:
            transport.abort()

    def on_pull(self, msg: Handoff) -> None:
        """Another worker asks for one of our connections."""
        conn = self.ctx.conns.get(msg.conid)
        owner = token_worker(msg.token)
        index = self.balancer.index_of(owner)
        if conn is None or index is None or _colocated(conn) >= MAX_MOVES or self.busy():
            return
        if self.ctx.shm.heartbeats.conns(index) <= len(self.ctx.conns):
            self.move(conn, owner)

    # -- what the worker calls ------------------------------------------------------------------

    def on_control(self, msg: Handoff, link: Blockable | None) -> None:
        """A connection-moving message from another worker, and the link it came on."""
        if msg.kind is HandoffKind.PULL:
            self.on_pull(msg)
        else:
            self.handover.on_control(msg, link)

    def sink_for(
        self, conid: int, record: Sent | None, reader: Blockable | None
    ) -> MovedSink | None:
        """Where relay() sends a frame for `conid` if it moved away from here."""
        return self.handover.sink_for(conid, record, reader)

    def deliver(self, conid: int, data: bytes | memoryview, flags: int, source: Hashable) -> bool:
        """A handoff for a connection that moved away: pass it on; False if unknown."""
        return self.handover.deliver(conid, data, flags, source)

    def adopt(self, sock: Any, message: bytes) -> None:
        """A connection another worker moved here (balance.py's accept socket)."""
        self.handover.adopt(sock, message)

    def tick(self) -> None:
        """Once a second: the handover's timeouts."""
        self.handover.tick()


def _colocated(conn: Connection) -> int:
    """How often colocation moved `conn`."""
    return conn.moves - conn.handovers
