"""Colocation: move a connection to the worker its peer is on, so a pair is served by one process.

Why (issue 7): a pair split over two workers costs each relayed frame two handoffs (the SEND
one way, its 200 back): about 30 instead of 22 us of relay CPU per 10 KiB frame, and two
more process wake-ups of latency. Kamailio has no such cost: any of its processes writes to
any connection. Here the connection moves instead (DESIGN §2: fd passing where it helps).

When: a connection that relays STREAK frames in a row to connections of one other worker (a
client talking to its peer) is moved there, or the peer is asked to come here (PULL),
whichever keeps the two workers' connection counts within two of each other. A frame of
BIG_FRAME bytes or more (or streamed: a body over max_body) makes a streak by itself. A
connection in the middle of a big frame (a streamed one, or more of one read than MAX_CARRY)
waits, the move still wanted, for a read that ends a frame with little of the next one read,
and reading not paused by a congested destination (a sender of big messages mostly is: it is
asked again when it resumes, before it reads on). At the end of a streamed frame with more
of the next one read than that, the peer is asked to come instead, its stream just ended;
the peer, asked to come (PULL) when it still has bytes to write, is asked again a few times,
while a sender of big frames reads nothing for QUIESCE seconds so that its peer can write
out what it holds (issue 16: a big message would otherwise cross the handoff link for as
long as it lasts, each byte copied twice more). A relay to a connection of this worker, or
to a third worker, drops the wish. One move at a time in the whole relay (lock.py: held from
the socket's sending to RELEASE), and a worker that still holds frames back for a connection
it took over moves nothing: two ends of a pair moving at once could let a frame pass an
earlier one. Only plain TCP connections accepted by a worker (TLS state lives in this
process's SSL object; outbound links to other relays stay), only between frames, with
nothing waiting to be written to it, no streamed frame going in or out, not paused by flow
control, at most MAX_MOVES times (conn.bytes_to_carry says when).

What happens once the socket has left is handover.py's (handoverio.py drives it). A retiring
worker (reload) uses the same sending through retire.py, many connections under one hold of
the lock.
Colocation runs only with `[core] balance = true`; moving on reload does not depend on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator
from typing import Generic

from ...protocol import Frame
from ..handoff import Handoff, HandoffKind
from ..ports import Blockable
from .balance import AcceptBalancer
from .handoverio import Handover, MovedSink
from .lock import MoveLock
from .ports import Conn, ConnT, WorkerPort
from .state import Worker, token_worker, worker_token
from .wire import MoveState, encode_moved

__all__ = [
    "BIG_FRAME",
    "MAX_CARRY",
    "MAX_MOVES",
    "STREAK",
    "Mover",
    "move_message",
    "ready_to_move",
]

logger = logging.getLogger(__name__)

STREAK = 16
"""Frames in a row relayed to one other worker before the connection moves."""
BIG_FRAME = 1 << 16
"""A frame this big (or streamed) is a streak by itself: its bytes would cross a handoff
link, copied twice more, and more such frames most likely follow."""
MAX_MOVES = 3
"""A connection moves at most this often (a client with peers everywhere stays put)."""
RETRY = 0.25
"""Seconds between two attempts for one connection (a peer that could not come when asked,
writing, may be free to a quarter of a second later)."""
MAX_CARRY = 1 << 16
"""A connection whose reader holds more than this (a large frame half read) waits."""
PULL_WAIT = 0.02
PULL_TRIES = 10
"""A connection asked for (PULL) that cannot go yet is asked again PULL_WAIT seconds later,
PULL_TRIES times in all: over before the asking connection's next attempt (RETRY), so that
it is never asked for while its peer is on its way to it."""
QUIESCE = 0.05
"""Seconds a sender of big messages reads nothing once it has asked for its peer."""
QUIET_OTHERS = 1.0
"""Seconds without relaying to a third worker before a connection may move (handover.py)."""


class _Quiesce:
    """What pauses a connection's reading while its peer is asked to come (intake.py)."""

    __slots__ = ()


def ready_to_move(conn: Conn, stopping: bool, handover: bool = False) -> bytes | None:
    """What conn's reader holds, if conn can move now; else None. A stop reads no more:
    nothing to gain by moving, frames to lose. A reload's `handover` waits for the
    connection's live transactions (the retiring worker owns them and may exit first);
    colocation does not: they stay on this worker, which lives on (txrelay.py)."""
    migration = conn.migration
    if not migration.movable or stopping or (handover and migration.tx_open):
        return None
    held = conn.bytes_to_carry()
    return held if held is not None and len(held) <= MAX_CARRY else None


def move_message(conn: Conn, held: bytes, me: Worker, *, handover: bool = False) -> bytes | None:
    """What the new owner needs to serve `conn` (wire.MoveState); None when its state is over
    MAX_STATE. `handover`: a reload moves it (not counted against MAX_MOVES)."""
    return MoveState.of(conn, held, me, handover=handover).encode()


class Mover(Generic[ConnT]):
    """This worker's side of colocation: when to move, and sending the socket.

    Args:
        host: the worker's shared resources (its connections, the handoff links).
        balancer: who the other workers are, and fd passing.
        handover: what happens once a socket is sent (or one is moved here).
        lock: the relay-wide move lock.
        colocate: `[core] balance`: move connections to their peers' workers. Without it
            the mover still answers what other workers ask of it (a reload's handover).
    """

    def __init__(
        self,
        host: WorkerPort[ConnT],
        balancer: AcceptBalancer,
        handover: Handover[ConnT],
        lock: MoveLock,
        *,
        colocate: bool,
    ) -> None:
        self.host = host
        self.balancer = balancer
        self.handover = handover
        self.lock = lock
        self.colocate = colocate
        self.me = handover.machine.me

    # -- deciding -----------------------------------------------------------------------------

    def note_remote(
        self, source: Conn, owner: Worker, conid: int, frame: Frame | None = None
    ) -> None:
        """relay() from `source` went to connection `conid` of worker `owner`: `frame`, a
        streak by itself when it has BIG_FRAME bytes or more (or is streamed)."""
        if not self.colocate:
            return
        big = frame is not None and (frame.streamed or len(frame.buf) >= BIG_FRAME)
        state = source.migration
        if state.streak_owner != owner:
            if state.streak_owner is not None:
                state.others_at = time.monotonic()  # relayed to a third worker
            state.streak_owner, state.streak, state.move_to = owner, 0, None
        state.streak += STREAK if big else 1
        if state.streak >= STREAK:
            state.move_to = (owner, conid)
            state.wish_moves = self.handover.moves
            state.streamed = frame is not None and frame.streamed
            state.big = big

    def consider(self, conn: ConnT) -> None:
        """After `conn`'s read: move it to, or pull its peer from, the worker it relays to."""
        state = conn.migration
        now = time.monotonic()
        big = False  # more of a frame read than a move carries: only the peer may come
        if state.colocated < MAX_MOVES and now >= state.move_retry_at:
            held = conn.carry_size()
            if held < 0 or self.busy():
                return  # in the middle of a big frame, or another move is out: a later read
            big = held > MAX_CARRY
            if big and not state.streamed:
                return  # a frame's end with little of the next read comes soon enough
        target = state.move_to
        if target is not None and state.wish_moves != self.handover.moves:
            target = None  # a connection moved in or out since the wish: maybe its peer
        state.move_to, state.streak, state.streak_owner = None, 0, None
        if target is None or now < state.move_retry_at or state.colocated >= MAX_MOVES:
            return
        if now - state.others_at < QUIET_OTHERS:
            return
        state.move_retry_at = now + RETRY
        owner, peer = target
        index = self.balancer.index_of(owner)
        if index is None:
            return  # not a RUNNING worker of our generation
        theirs, mine = self.balancer.heartbeats.conns(index), len(self.host.conns)
        # Moving ours there is fair if they hold no more than we do, pulling theirs here if we
        # hold no more than they do. With equal counts, ours goes if it can: a connection
        # with bytes still waiting to be written to it (a flooded receiver) cannot.
        if theirs <= mine and not big and self.move(conn, owner):
            logger.debug("connection %x relays to %x: moved it there", conn.conid, peer)
        elif mine <= theirs:
            logger.debug("connection %x relays to %x: asking for that one", conn.conid, peer)
            self.host.handoffs.control(owner, HandoffKind.PULL, peer, worker_token(*self.me))
            # Asked: not again before RETRY, though a move refused for the lock reset it.
            state.move_retry_at = now + RETRY
            if state.big:
                self.quiesce(conn)

    def quiesce(self, conn: ConnT) -> None:
        """`conn` reads nothing for QUIESCE seconds: its peer, flooded by it with a big
        message, writes out what it holds and can come (PULL, tried again meanwhile)."""
        pause = _Quiesce()
        conn.block(pause)
        self.host.loop.call_later(QUIESCE, conn.unblock, pause)

    def busy(self) -> bool:
        """A move out or in is unfinished: one at a time per worker, so two connections
        never move at once through one worker (their frames could pass each other)."""
        return self.handover.busy()

    def move(self, conn: ConnT, owner: Worker) -> bool:
        """Send `conn` to worker `owner`; False when it stays here."""
        self.host.batch.flush_now()
        held = ready_to_move(conn, self.host.stop.stopping)
        transport = conn.wire.transport
        if held is None or transport is None:
            return False
        message = move_message(conn, held, self.me)
        if message is None:
            return False  # thousands of sessions: not worth a move
        if not self.lock.acquire():
            conn.migration.move_retry_at = 0.0  # only another move was in the way: soon
            return False
        try:
            transport.pause_reading()
            if not self.balancer.send_to(owner, [transport], encode_moved(message)):
                transport.resume_reading()
                self.lock.release()
                return False
            self.handover.send_away(conn, owner)
        except BaseException:
            self.lock.release()
            raise
        return True

    def on_pull(self, msg: Handoff, tries: int = PULL_TRIES, moves: int = -1) -> None:
        """Another worker asks for one of our connections. One that cannot go yet (bytes
        still to write to it: a receiver of a big message) is asked again PULL_WAIT later,
        PULL_TRIES times at most, as long as no connection moved in or out meanwhile
        (`moves`, the handover's count when it was first asked): that one may be the peer,
        come here, which must not be parted from it again."""
        host = self.host
        if moves >= 0 and moves != self.handover.moves:
            return
        conn = host.conns.get(msg.conid)
        owner = token_worker(msg.token)
        index = self.balancer.index_of(owner)
        if conn is None or index is None or conn.migration.colocated >= MAX_MOVES:
            return
        if self.balancer.heartbeats.conns(index) > len(host.conns):
            return
        if self.busy():
            return  # that move may bring the peer here
        if self.move(conn, owner) or tries <= 1:
            return
        if conn.migration.movable and not host.stop.stopping:  # it may go once written out
            host.loop.call_later(PULL_WAIT, self.on_pull, msg, tries - 1, self.handover.moves)

    # -- what the worker calls ------------------------------------------------------------------

    def on_control(self, msg: Handoff, link: Blockable | None) -> None:
        """A connection-moving message from another worker, come on handoff link `link`."""
        if msg.kind is HandoffKind.PULL:
            self.on_pull(msg)
        else:
            self.handover.on_control(msg, link)

    def sink_for(self, conid: int, record: object, reader: Blockable | None) -> MovedSink | None:
        """Where relay() sends a frame for `conid` if it moved away from here; `record` is
        the routed frame (a GONE reports it), `reader` what flow control pauses."""
        return self.handover.sink_for(conid, record, reader)

    def deliver(self, conid: int, data: bytes | memoryview, flags: int, source: Hashable) -> bool:
        """A handoff for a connection that moved away: pass it on; False if unknown."""
        return self.handover.deliver(conid, data, flags, source)

    def queued_sources(self) -> Iterator[Hashable]:
        """The sources of the frames waiting for a moving connection's new id (held.py)."""
        for departure in self.handover.machine.departures.values():
            for _, _, source, _ in departure.queue:
                yield source

    def tick(self) -> None:
        """Once a second: the handover's timeouts."""
        self.handover.tick()

    def close(self) -> None:
        self.lock.close()
