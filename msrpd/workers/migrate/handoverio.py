"""The handover's I/O: drives HandoverMachine (handover.py) with the handoff links, the shared
tables, the clock and the connections, and carries out what it returns, in order.

Both ends of a move go through here: the old owner sends the socket away (send_away), passes
on what comes for the old id (MovedSink, deliver) and answers the control messages; the new
owner serves the socket (adopt) and holds it back until MOVING and RELEASE.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Hashable
from typing import Any, Generic

from ...shm import Counter, Heartbeats, WorkerState
from ..handoff import Handoff, HandoffKind, frame_flags
from ..ports import Blockable, Sink
from .actions import (
    Action,
    Forward,
    HoldReading,
    Lost,
    NoteMoved,
    Peers,
    Purge,
    Release,
    Send,
    SetReleaseLink,
    StartReading,
    Unlock,
)
from .handover import NEW_ID, Departure, HandoverMachine
from .lock import MoveLock
from .ports import ConnT, WorkerPort
from .state import Worker, token_worker
from .wire import MoveState

__all__ = ["Handover", "MovedSink"]

_SERVING = (WorkerState.RUNNING, WorkerState.DRAINING)


class MovedSink(Sink):
    """relay() to a connection that moved away: queue or forward it."""

    __slots__ = ("departure", "handover", "reader", "record")

    def __init__(
        self,
        handover: Handover[Any],
        departure: Departure,
        record: object,
        reader: Blockable | None,
    ) -> None:
        self.handover = handover
        self.departure = departure
        self.record = record
        """The routed frame (gone.Sent): a GONE for it is reported to its sender."""
        self.reader = reader
        """What flow control pauses while the link is full."""

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        handover, departure = self.handover, self.departure
        flags = frame_flags(more, close_after)
        now = time.monotonic()
        handover.run(handover.machine.pass_on(departure, data, flags, source, now, self.record))
        # As HandoffSink does: pause the reader while the link is full.
        handoffs = handover.host.handoffs
        handoffs.throttle(handoffs.path(*departure.owner), self.reader)
        return True


class Handover(Generic[ConnT]):
    """This worker's end of every handover.

    Args:
        host: the worker's shared resources.
        heartbeats: who the other workers are (Peers).
        me, index: this worker, and its heartbeat record.
        lock: the move lock; each move sent away is one of its moves out.
        new_conn: builds the connection object for a socket moved here.
    """

    def __init__(
        self,
        host: WorkerPort[ConnT],
        heartbeats: Heartbeats,
        me: Worker,
        index: int,
        lock: MoveLock,
        new_conn: Callable[[str], ConnT],
    ) -> None:
        self.host = host
        self.heartbeats = heartbeats
        self.index = index
        self.lock = lock
        self.moves = 0
        """Connections sent away from here or taken over, so far (colocate.py's PULL waits)."""
        self.new_conn = new_conn
        self.machine: HandoverMachine[ConnT] = HandoverMachine(me, self._new_token)

    def busy(self) -> bool:
        """A move this worker started or took in is unfinished."""
        return self.machine.busy()

    def peers(self) -> Peers:
        pids: dict[Worker, int] = {}
        serving: set[Worker] = set()
        for record in self.heartbeats.live():
            if record.pid == 0:
                continue
            worker = (record.slot, record.generation)
            pids.setdefault(worker, record.pid)
            if record.state in _SERVING:
                serving.add(worker)
        return Peers(pids, frozenset(serving))

    def _new_token(self, source: Hashable, record: object) -> int:
        sent = self.host.handoffs.sent
        token = sent.new_token(record)
        sent.note_forward(token, source)  # a GONE for it goes back to where it came from
        return token

    # -- the old owner --------------------------------------------------------------------------

    def send_away(self, conn: ConnT, owner: Worker, *, fence_first: bool = False) -> None:
        """`conn`'s socket is worker `owner`'s now (its reading was paused before it was
        sent): forget it here without closing the session, and start the handover."""
        host = self.host
        transport = conn.wire.transport
        conn.migration.passed = conn.closed = True
        self.moves += 1
        host.conns.pop(conn.conid, None)
        self.heartbeats.set_conns(self.index, len(host.conns))
        host.counters.add(Counter.conns_moved)
        self.lock.started()
        now = time.monotonic()
        self.run(self.machine.sent(conn.conid, owner, now, self.peers(), fence_first=fence_first))
        if transport is not None:
            transport.abort()

    def sink_for(self, conid: int, record: object, reader: Blockable | None) -> MovedSink | None:
        """Where relay() sends a frame for `conid` if it moved away from here."""
        departure = self.machine.departures.get(conid)
        return None if departure is None else MovedSink(self, departure, record, reader)

    def deliver(self, conid: int, data: bytes | memoryview, flags: int, source: Hashable) -> bool:
        """A handoff for a connection that moved away: pass it on; False if unknown."""
        actions = self.machine.frame(conid, data, flags, source, time.monotonic())
        if actions is None:
            return False
        self.run(actions)
        return True

    # -- the new owner --------------------------------------------------------------------------

    def adopt(self, sock: socket.socket, message: bytes) -> None:
        """A connection another worker moved here (inbox.py): its state, then the bytes its
        reader held. Raises WireError when the message does not parse."""
        state = MoveState.decode(message)
        self.moves += 1
        conn = self.new_conn(state.listen)
        state.restore(conn)
        host, machine = self.host, self.machine

        def taken_over(conn: ConnT) -> None:
            # Registered here (registry included) by now: sessions follow, then A hears.
            cmap = host.cmap
            if cmap is not None:
                for sessid in conn.stats.sessions:
                    cmap.rebind(sessid, state.old, conn.conid)
            now = time.monotonic()
            self.run(machine.taken_over(conn, state.old, state.came_from, conn.conid, now))

        conn.arrive(state.held, taken_over)
        host.serve_socket(conn, sock)

    # -- messages and time ----------------------------------------------------------------------

    def on_control(self, msg: Handoff, link: Blockable | None) -> None:
        """A connection-moving message from another worker, come on handoff link `link`."""
        machine, kind, now = self.machine, msg.kind, time.monotonic()
        if kind is HandoffKind.MOVED:
            new = NEW_ID.unpack(msg.payload)[0]
            self.run(machine.moved(msg.conid, new, self.peers(), now))
        elif kind is HandoffKind.FENCE:
            self.run(machine.fence(msg.conid, token_worker(msg.token)))
        elif kind is HandoffKind.FENCE_ACK:
            self.run(machine.fence_ack(msg.conid, token_worker(msg.token), now))
        elif kind is HandoffKind.RELEASE:
            self.run(machine.release(msg.conid))
        elif kind is HandoffKind.MOVING:
            # RELEASE will come on this link: flow control must never stop reading it for the
            # sake of what the connection holds back (outbox.py, hold.py).
            self.run(machine.moving(msg.conid, link, now))

    def tick(self) -> None:
        """Once a second: the timeouts (handover.py, step 5)."""
        self.run(self.machine.tick(time.monotonic(), self.peers()))

    def run(self, actions: list[Action[ConnT]]) -> None:
        """Carry out what the machine said, in order."""
        host = self.host
        for action in actions:
            match action:
                case Send(worker, kind, conid, token, payload):
                    host.handoffs.control(worker, kind, conid, token, payload)
                case Forward(owner, new, token, data, flags):
                    hub = host.hub
                    if hub is not None:
                        hub.send(host.handoffs.path(*owner), new, token, [data], flags)
                case NoteMoved(old, owner, new):
                    host.handoffs.sent.note_moved(old, host.handoffs.path(*owner), new)
                case Unlock():
                    self.lock.finished()
                case Lost(_old, frames):
                    host.counters.add(Counter.relay_fail, frames)
                case Purge(conids):
                    # Sent away, never taken over (the new worker died with the sockets):
                    # one pass over each table for all such ids of a tick.
                    if host.cmap is not None:
                        host.cmap.purge(conids)
                    if host.registry is not None:
                        host.registry.purge(conids)
                case HoldReading(conn):
                    conn.hold_reading()
                case SetReleaseLink(conn, link):
                    conn.release_on(link)
                case StartReading(conn, link):
                    conn.release_on(link)
                    conn.start_reading()
                case Release(conid):
                    released = host.conns.get(conid)
                    if released is not None:
                        released.release()
