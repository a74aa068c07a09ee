"""Handover: a connection's socket has gone from one worker to another; nothing may be lost
and no sender's frames may pass each other. colocate.py decides when a connection moves.

How (nothing lost, and frames from any one source stay in order):
1. Old owner A flushes the connection, takes what its reader holds (a frame not delivered
   yet), stops reading and sends the socket with its state to B's accept socket
   (balance.py), then MOVING on its handoff link to B, behind every frame it relayed from
   the connection to B. From then on A queues what arrives for the old id.
2. B serves the socket under a new id: registry and cmap sessions point to it, and B answers
   MOVED(old -> new). The connection starts reading (the held bytes first) only once MOVING
   has come, so its new frames cannot overtake those A relayed. B writes to it only frames A
   FORWARDED; anything else for it is held back until RELEASE.
   A connection moves only if it relayed nothing to a third worker for a second
   (colocate.QUIET_OTHERS): those frames took another link, which MOVING does not follow.
3. A forwards its queue, and from then on anything for the old id. It sends FENCE to every
   other worker, which answers FENCE_ACK after everything it sent to the old id (one link,
   one order). With every answer in, A sends RELEASE and B writes what it held back.
   A frame routed before the cmap changed went to A and is forwarded before RELEASE; one
   routed after went to B and waits for RELEASE.
4. Flow control never pauses A's link on behalf of the moved connection while it holds
   frames back: RELEASE comes on that link, so the hold would never end.
   A retiring worker (reload, retire.py) cannot wait for its connections to go quiet, so it
   fences first: before MOVING it sends FENCE to every other worker and waits for every
   FENCE_ACK (one link each way, in order), so whatever it relayed from the connection to a
   third worker has been taken in there before the connection's next frame can be read.
5. Timeouts: no MOVED within MOVED_TIMEOUT: if B died (its heartbeat names another pid or
   none), A fails what it queued (counted, logged) and removes the sessions and registry
   entries still naming the old id, one purge for all such ids of a tick (the supervisor
   purges only B's own ids). A B that lives is only slow (a loaded box, a large batch): A
   keeps queueing and waits for its MOVED (its cmap.rebind needs the old id's entries),
   up to HOLD_TIMEOUT after sending; then A fails the queue but leaves the entries, which
   B may still rebind (or which go when A's ids are purged at its exit). Missing
   FENCE_ACKs are given up after FENCE_TIMEOUT; B releases by itself after HOLD_TIMEOUT (A
   is gone, or a congested connection fed by A kept its link paused that long). A keeps
   forwarding for an old id until TOMBSTONE seconds pass unused.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shm import Counter, WorkerState
from .handoff import Handoff, HandoffFlags, HandoffKind, conid_owner, frame_flags
from .ports import Sink

if TYPE_CHECKING:
    from .connapi import Connection
    from .context import WorkerContext
    from .gone import Sent
    from .ports import Blockable

__all__ = ["Handover", "MovedSink", "token_worker", "worker_token"]

logger = logging.getLogger(__name__)

MOVED_TIMEOUT = 5.0
FENCE_TIMEOUT = 1.0
HOLD_TIMEOUT = 30.0
TOMBSTONE = 30.0

_NEW_ID = struct.Struct("!Q")
_FORWARDED = HandoffFlags.FORWARDED
_MORE = HandoffFlags.MORE


def worker_token(slot: int, generation: int) -> int:
    """A worker's (slot, generation) in a handoff token (u32)."""
    return slot << 16 | generation


def token_worker(token: int) -> tuple[int, int]:
    return token >> 16, token & 0xFFFF


@dataclass(slots=True, eq=False)
class Moving:
    """At the old owner: a connection sent away, and what arrives for its old id."""

    old: int
    owner: tuple[int, int]
    """The new owner (slot, generation)."""
    path: Path
    """The new owner's handoff path."""
    deadline: float
    since: float = 0.0
    """When the socket was sent."""
    owner_pid: int = 0
    """The new owner's pid then (0: unknown): another pid there later means it died."""
    new: int | None = None
    queue: list[tuple[bytes, int, Hashable, Sent | None]] = field(default_factory=list)
    tokens: dict[Hashable, int] = field(default_factory=dict)
    """Source -> forwarding token while a streamed frame's pieces pass (one token per frame)."""
    fences: set[tuple[int, int]] = field(default_factory=set)
    pre_fences: set[tuple[int, int]] = field(default_factory=set)
    """Workers whose FENCE_ACK must come before MOVING is sent (fence_first)."""
    pre_fence_by: float = 0.0
    late: set[tuple[int, int]] = field(default_factory=set)
    """Workers given up on before MOVING: their next FENCE_ACK is that late one."""
    released: bool = False


class MovedSink(Sink):
    """relay() to a connection that moved away: queue or forward it (sinks.Sink)."""

    __slots__ = ("handover", "moving", "reader", "record")

    def __init__(
        self, handover: Handover, moving: Moving, record: Sent | None, reader: Blockable | None
    ) -> None:
        self.handover = handover
        self.moving = moving
        self.record = record
        """The routed frame (gone.py: a GONE for it is reported to its sender)."""
        self.reader = reader
        """The connection being read (paused as HandoffSink pauses it)."""

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        flags = frame_flags(more, close_after)
        self.handover.pass_on(self.moving, data, flags, source, self.record)
        self.handover.ctx.handoffs.throttle(self.moving.path, self.reader)  # as HandoffSink
        return True


class Handover:
    """Both ends of moves: the old owner's queue, forwarding and fences, the new owner's hold.

    Args:
        ctx: this worker's context.
        new_conn: builds the connection object for a socket moved here.
        unlock: called when a move this worker started is over (released or failed).
    """

    def __init__(
        self,
        ctx: WorkerContext,
        new_conn: Callable[[str], Connection],
        unlock: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.new_conn = new_conn
        self.unlock = unlock
        self.me = (ctx.ident.slot, ctx.ident.generation)
        self.moving: dict[int, Moving] = {}
        """Old id -> a connection sent away (the old owner's side)."""
        self.holding: dict[int, float] = {}
        """New ids of connections taken over and not yet released -> since when."""
        self.waiting: dict[int, tuple[Connection, float]] = {}
        """Old id -> a connection taken over that waits for MOVING before it reads."""
        self.arrived: dict[int, tuple[float, Blockable | None]] = {}
        """Old ids whose MOVING came before their socket -> (when, the link it came on)."""

    def busy(self) -> bool:
        """A move this worker started or took in is unfinished."""
        if self.holding or self.waiting:
            return True
        return any(not moving.released for moving in self.moving.values())

    def sent(self, conid: int, owner: tuple[int, int], *, fence_first: bool = False) -> None:
        """The socket of `conid` went to worker `owner`: queue what comes for it from now on,
        and tell the owner when everything relayed from it so far is on the link (MOVING).
        With `fence_first`, MOVING waits until every other worker has answered a FENCE
        (module docstring, step 4)."""
        ctx = self.ctx
        now = time.monotonic()
        moving = Moving(conid, owner, ctx.handoffs.path(*owner), now + MOVED_TIMEOUT, now)
        moving.owner_pid = self._pid(owner)
        self.moving[conid] = moving
        if fence_first:
            moving.pre_fences = self._others(owner)
            moving.pre_fence_by = now + FENCE_TIMEOUT
            token = worker_token(*self.me)
            for worker in moving.pre_fences:
                ctx.handoffs.control(worker, HandoffKind.FENCE, conid, token)
        if not moving.pre_fences:
            ctx.handoffs.control(owner, HandoffKind.MOVING, conid)

    def _others(self, owner: tuple[int, int]) -> set[tuple[int, int]]:
        """Every live worker but this one and `owner`."""
        return self._live() - {self.me, owner}

    def _live(self) -> set[tuple[int, int]]:
        """The workers that serve connections (an EXITING one has none left)."""
        return {
            (record.slot, record.generation)
            for record in self.ctx.shm.heartbeats.live()
            if record.pid != 0 and record.state in (WorkerState.RUNNING, WorkerState.DRAINING)
        }

    def _pid(self, worker: tuple[int, int]) -> int:
        """The pid of worker (slot, generation) now, 0 when none runs."""
        for record in self.ctx.shm.heartbeats.live():
            if record.pid != 0 and (record.slot, record.generation) == worker:
                return record.pid
        return 0

    def _owner_lives(self, moving: Moving) -> bool:
        pid = self._pid(moving.owner)
        return pid != 0 and pid == (moving.owner_pid or pid)

    def _forget_exited(self, moving: Moving, live: set[tuple[int, int]]) -> None:
        """Fenced workers that exited, or are about to with nothing left to send (EXITING),
        will not answer: stop waiting for them."""
        gone = (moving.pre_fences | moving.fences) - live
        if not gone:
            return
        waiting = bool(moving.pre_fences)
        moving.late |= moving.pre_fences & gone
        moving.pre_fences -= gone
        moving.fences -= gone
        if waiting and not moving.pre_fences:
            self._send_moving(moving)
        else:
            self._maybe_release(moving)

    # -- the old owner --------------------------------------------------------------------------

    def sink_for(
        self, conid: int, record: Sent | None, reader: Blockable | None
    ) -> MovedSink | None:
        moving = self.moving.get(conid)
        return None if moving is None else MovedSink(self, moving, record, reader)

    def deliver(self, conid: int, data: bytes | memoryview, flags: int, source: Hashable) -> bool:
        """A handoff for a connection that moved away: pass it on; False if unknown."""
        moving = self.moving.get(conid)
        if moving is None:
            return False
        self.pass_on(moving, data, flags & ~_FORWARDED, source, None)
        return True

    def pass_on(
        self,
        moving: Moving,
        data: bytes | memoryview,
        flags: int,
        source: Hashable,
        record: Sent | None,
    ) -> None:
        if moving.new is None:
            moving.queue.append((bytes(data), flags, source, record))
            return
        self._forward(moving, data, flags, source, record)

    def _forward(
        self,
        moving: Moving,
        data: bytes | memoryview,
        flags: int,
        source: Hashable,
        record: Sent | None,
    ) -> None:
        hub, ctx = self.ctx.hub, self.ctx
        assert hub is not None and moving.new is not None
        token = moving.tokens.get(source)
        if token is None:
            token = ctx.handoffs.sent.new_token(record)
            # A GONE for it goes back to where it came from.
            ctx.handoffs.sent.note_forward(token, source)
        if flags & _MORE:
            moving.tokens[source] = token
        else:
            moving.tokens.pop(source, None)
        hub.send(moving.path, moving.new, token, [data], flags | _FORWARDED)
        if moving.released:  # before, the deadline is the fences' (FENCE_TIMEOUT)
            moving.deadline = time.monotonic() + TOMBSTONE

    def on_moved(self, msg: Handoff) -> None:
        moving = self.moving.get(msg.conid)
        if moving is None or moving.new is not None:
            return
        moving.new = _NEW_ID.unpack(msg.payload)[0]
        self.ctx.handoffs.sent.note_moved(moving.old, moving.path, moving.new)
        queue, moving.queue = moving.queue, []
        for data, flags, source, record in queue:
            self._forward(moving, data, flags, source, record)
        token = worker_token(*self.me)
        moving.fences = self._others(conid_owner(moving.new))
        for worker in moving.fences:
            self.ctx.handoffs.control(worker, HandoffKind.FENCE, moving.old, token)
        moving.deadline = time.monotonic() + FENCE_TIMEOUT
        self._maybe_release(moving)

    def on_fence_ack(self, msg: Handoff) -> None:
        moving = self.moving.get(msg.conid)
        if moving is None:
            return
        worker = token_worker(msg.token)
        if worker in moving.late:
            moving.late.discard(worker)  # not the answer to the fence before RELEASE
            return
        if worker in moving.pre_fences:
            # A worker answers its fences in order: its first answer is the earlier fence's.
            moving.pre_fences.discard(worker)
            if not moving.pre_fences:
                self._send_moving(moving)
            return
        moving.fences.discard(worker)
        self._maybe_release(moving)

    def _send_moving(self, moving: Moving) -> None:
        self.ctx.handoffs.control(moving.owner, HandoffKind.MOVING, moving.old)
        self._maybe_release(moving)

    def _maybe_release(self, moving: Moving, force: bool = False) -> None:
        if moving.released or moving.new is None or moving.pre_fences:
            return  # MOVING goes first: RELEASE must not overtake it
        if moving.fences and not force:
            return
        if moving.fences:
            logger.info("connection %x: no fence answer from %s", moving.old, moving.fences)
        moving.released = True
        self.ctx.handoffs.control(conid_owner(moving.new), HandoffKind.RELEASE, moving.new)
        self.unlock()
        moving.deadline = time.monotonic() + TOMBSTONE

    # -- any worker -----------------------------------------------------------------------------

    def on_fence(self, msg: Handoff) -> None:
        """Everything we sent for msg.conid is on the link before this answer."""
        token = worker_token(*self.me)
        self.ctx.handoffs.control(token_worker(msg.token), HandoffKind.FENCE_ACK, msg.conid, token)

    # -- the new owner --------------------------------------------------------------------------

    def adopt(self, sock: Any, message: bytes) -> None:
        """A connection another worker moved here: its state, then the bytes its reader held."""
        head, _, held = message.partition(b"\n")
        state = json.loads(head)
        ctx = self.ctx
        conn = self.new_conn(state["listen"])
        stats = conn.stats
        stats.sessions = list(state["sessions"])
        stats.session_meta = {k: (v[0], v[1]) for k, v in state["meta"].items()}
        stats.frames_in, stats.frames_out, stats.bytes_in, stats.bytes_out = state["counts"]
        stats.opened, conn.moves = state["opened"], state["moves"]
        conn.handovers = state.get("handovers", 0)
        stats.last_active = state.get("active", stats.last_active)  # idle_timeout goes on
        conn.holding, conn.carried = [], held
        old, came_from = int(state["old"]), tuple(state["from"])

        def taken_over(conn: Connection) -> None:
            # Registered here (registry included) by now: sessions follow, then A hears.
            cmap = ctx.cmap
            if cmap is not None:
                for sessid in conn.stats.sessions:
                    cmap.rebind(sessid, old, conn.conid)
            now = time.monotonic()
            self.holding[conn.conid] = now
            ctx.handoffs.control(came_from, HandoffKind.MOVED, old, 0, _NEW_ID.pack(conn.conid))
            arrived = self.arrived.pop(old, None)
            if arrived is None:
                conn.hold_reading()
                self.waiting[old] = (conn, now)
            else:
                conn.release_link = arrived[1]

        conn.on_taken_over = taken_over
        ctx.serve_socket(conn, sock)

    def on_moving(self, msg: Handoff, link: Blockable | None) -> None:
        # RELEASE will come on `link`: flow control must never stop reading it for the
        # sake of what the connection holds back (conn.write_frame).
        waiting = self.waiting.pop(msg.conid, None)
        if waiting is None:
            self.arrived[msg.conid] = (time.monotonic(), link)
        else:
            waiting[0].release_link = link
            waiting[0].start_reading()

    def on_release(self, msg: Handoff) -> None:
        self._release(msg.conid)

    def _release(self, conid: int) -> None:
        self.holding.pop(conid, None)
        conn = self.ctx.conns.get(conid)
        if conn is not None:
            conn.release()

    def tick(self) -> None:
        """Once a second: timeouts (module docstring, step 4)."""
        now = time.monotonic()
        for old, (conn, since) in list(self.waiting.items()):
            if now - since > HOLD_TIMEOUT:
                logger.warning("connection %x: no MOVING from its old worker; reading", old)
                del self.waiting[old]
                conn.start_reading()
        for old, (since, _link) in list(self.arrived.items()):
            if now - since > MOVED_TIMEOUT:
                del self.arrived[old]  # its socket never came
        for conid, since in list(self.holding.items()):
            if now - since > HOLD_TIMEOUT:
                logger.warning("connection %x: no RELEASE from its old worker; releasing", conid)
                self._release(conid)
        fenced = [m for m in self.moving.values() if m.pre_fences or (m.fences and not m.released)]
        live = self._live() if fenced else set()
        for moving in fenced:
            self._forget_exited(moving, live)
        dead: set[int] = set()
        for old, moving in list(self.moving.items()):
            if moving.pre_fences and now > moving.pre_fence_by:
                logger.info("connection %x: no fence answer from %s", old, moving.pre_fences)
                moving.late, moving.pre_fences = moving.pre_fences, set()
                self._send_moving(moving)
            if now < moving.deadline:
                continue
            if moving.new is None:
                lives = self._owner_lives(moving)
                if lives and now - moving.since < HOLD_TIMEOUT:
                    if moving.deadline - moving.since <= MOVED_TIMEOUT:  # said once
                        logger.info(
                            "connection %x: no MOVED yet from %s; waiting", old, moving.owner
                        )
                    moving.deadline = now + 1.0  # slow, not dead (module docstring, step 5)
                    continue
                lost = len(moving.queue)
                logger.warning(
                    "connection %x: its new worker never answered; %d frames lost", old, lost
                )
                self.ctx.counters.add(Counter.relay_fail, lost)
                del self.moving[old]
                if not lives:
                    dead.add(old)
                self.unlock()
            elif not moving.released:
                self._maybe_release(moving, force=True)
            else:
                del self.moving[old]
        if dead:
            self._forget(dead)

    def _forget(self, old: set[int]) -> None:
        """Connections sent away were never taken over (their new worker died with the
        sockets): their sessions and registry entries still name the old ids, which nothing
        serves. One pass over each table for all of them."""
        ctx = self.ctx
        if ctx.cmap is not None:
            ctx.cmap.purge(old)
        if ctx.registry is not None:
            ctx.registry.purge(old)

    def on_control(self, msg: Handoff, link: Blockable | None) -> None:
        """A connection-moving message, and the link it came on."""
        if msg.kind is HandoffKind.MOVING:
            self.on_moving(msg, link)
            return
        handler = {
            HandoffKind.MOVED: self.on_moved,
            HandoffKind.FENCE: self.on_fence,
            HandoffKind.FENCE_ACK: self.on_fence_ack,
            HandoffKind.RELEASE: self.on_release,
        }.get(msg.kind)
        if handler is not None:
            handler(msg)
