"""Handover: a connection's socket has gone from one worker to another; nothing may be lost
and no sender's frames may pass each other. colocate.py decides when a connection moves.

The handover as a sans-IO state machine (style 18, as handoff.py is a codec): events in
(socket sent, MOVED, FENCE_ACK, a frame for the old id, a tick) with the time passed in,
actions out (actions.py); no socket, no clock, no loop: handoverio.py drives it. A move's
record at the old owner is a Departure, in one Phase: FENCING_FIRST (a reload's move: MOVING
waits for every other worker's FENCE_ACK), SENT (queueing until MOVED), FENCING (forwarding;
RELEASE waits for the FENCE_ACKs), RELEASED (forwarding late frames until TOMBSTONE passes
unused); then it is forgotten.

How (nothing lost, and frames from any one source stay in order):
1. Old owner A flushes the connection, takes what its reader holds (a frame not delivered
   yet), stops reading and sends the socket with its state to B's accept socket
   (inbox.py), then MOVING on its handoff link to B, behind every frame it relayed from
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

import logging
import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from ..handoff import HandoffFlags, HandoffKind, conid_owner
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
from .state import Worker, worker_token

__all__ = [
    "FENCE_TIMEOUT",
    "HOLD_TIMEOUT",
    "MOVED_TIMEOUT",
    "NEW_ID",
    "TOMBSTONE",
    "Departure",
    "HandoverMachine",
    "Phase",
]

logger = logging.getLogger(__name__)

MOVED_TIMEOUT = 5.0
FENCE_TIMEOUT = 1.0
HOLD_TIMEOUT = 30.0
TOMBSTONE = 30.0

NEW_ID = struct.Struct("!Q")
"""MOVED's payload: the new connection id."""
_FORWARDED = HandoffFlags.FORWARDED
_MORE = HandoffFlags.MORE

C = TypeVar("C")
"""The connection, opaque here: the machine only hands it back in actions."""


class Phase(Enum):
    FENCING_FIRST = "fencing first"
    SENT = "sent"
    FENCING = "fencing"
    RELEASED = "released"


_UNLOCK = Unlock()


@dataclass(slots=True, eq=False)
class Departure:
    """At the old owner: a connection sent away, and what arrives for its old id."""

    old: int
    owner: Worker
    """The new owner."""
    since: float
    """When the socket was sent."""
    deadline: float
    owner_pid: int = 0
    """The new owner's pid then (0: unknown): another pid there later means it died."""
    new: int | None = None
    queue: list[tuple[bytes, int, Hashable, object]] = field(default_factory=list)
    """(data, flags, source, record) of each frame that came before MOVED."""
    tokens: dict[Hashable, int] = field(default_factory=dict)
    """Source -> forwarding token while a streamed frame's pieces pass (one token per frame)."""
    fences: set[Worker] = field(default_factory=set)
    pre_fences: set[Worker] = field(default_factory=set)
    """Workers whose FENCE_ACK must come before MOVING is sent (fence_first)."""
    pre_fence_by: float = 0.0
    late: set[Worker] = field(default_factory=set)
    """Workers given up on before MOVING: their next FENCE_ACK is that late one."""
    released: bool = False

    @property
    def phase(self) -> Phase:
        if self.released:
            return Phase.RELEASED
        if self.pre_fences:
            return Phase.FENCING_FIRST
        return Phase.SENT if self.new is None else Phase.FENCING


class HandoverMachine(Generic[C]):
    """Both ends of moves: the old owner's queue, forwarding and fences, the new owner's hold.

    Args:
        me: this worker.
        new_token: `new_token(source, record)`: a fresh handoff token for a frame forwarded
            from `source` (`record`: the routed frame, for a GONE's REPORT; None: a handoff).
    """

    def __init__(self, me: Worker, new_token: Callable[[Hashable, object], int]) -> None:
        self.me = me
        self.new_token = new_token
        self.departures: dict[int, Departure] = {}
        """Old id -> a connection sent away (the old owner's side)."""
        self.holding: dict[int, float] = {}
        """New ids of connections taken over and not yet released -> since when."""
        self.waiting: dict[int, tuple[C, float]] = {}
        """Old id -> a connection taken over that waits for MOVING before it reads."""
        self.arrived: dict[int, tuple[float, object]] = {}
        """Old ids whose MOVING came before their socket -> (when, the link it came on)."""

    def busy(self) -> bool:
        """A move this worker started or took in is unfinished."""
        if self.holding or self.waiting:
            return True
        return any(not d.released for d in self.departures.values())

    # -- the old owner --------------------------------------------------------------------------

    def sent(
        self, old: int, owner: Worker, now: float, peers: Peers, *, fence_first: bool = False
    ) -> list[Action[C]]:
        """The socket of `old` went to worker `owner`: queue what comes for it from now on,
        and tell the owner when everything relayed from it so far is on the link (MOVING).
        With `fence_first`, MOVING waits until every other worker has answered a FENCE
        (module docstring, step 4)."""
        departure = Departure(old, owner, now, now + MOVED_TIMEOUT, peers.pids.get(owner, 0))
        self.departures[old] = departure
        out: list[Action[C]] = []
        if fence_first:
            departure.pre_fences = set(peers.serving - {self.me, owner})
            departure.pre_fence_by = now + FENCE_TIMEOUT
            token = worker_token(*self.me)
            out.extend(Send(w, HandoffKind.FENCE, old, token) for w in departure.pre_fences)
        if not departure.pre_fences:
            out.append(Send(owner, HandoffKind.MOVING, old))
        return out

    def frame(
        self, old: int, data: bytes | memoryview, flags: int, source: Hashable, now: float
    ) -> list[Action[C]] | None:
        """A frame for `old`, sent away: queued or forwarded; None when `old` is unknown."""
        departure = self.departures.get(old)
        if departure is None:
            return None
        return self.pass_on(departure, data, flags, source, now, None)

    def pass_on(
        self,
        departure: Departure,
        data: bytes | memoryview,
        flags: int,
        source: Hashable,
        now: float,
        record: object,
    ) -> list[Action[C]]:
        """A frame for `departure` (a relay() to it, with the routed frame's `record`, or a
        handoff): queued until MOVED, then forwarded."""
        flags &= ~_FORWARDED
        if departure.new is None:
            departure.queue.append((bytes(data), flags, source, record))
            return []
        return [self._forward(departure, data, flags, source, now, record)]

    def moved(self, old: int, new: int, peers: Peers, now: float) -> list[Action[C]]:
        """MOVED: the new owner serves `old` as `new`. Forward the queue, then FENCE every
        other worker: RELEASE follows their answers."""
        departure = self.departures.get(old)
        if departure is None or departure.new is not None:
            return []
        departure.new = new
        out: list[Action[C]] = [NoteMoved(old, departure.owner, new)]
        queue, departure.queue = departure.queue, []
        out.extend(self._forward(departure, d, f, s, now, r) for d, f, s, r in queue)
        departure.fences = set(peers.serving - {self.me, conid_owner(new)})
        token = worker_token(*self.me)
        out.extend(Send(w, HandoffKind.FENCE, old, token) for w in departure.fences)
        departure.deadline = now + FENCE_TIMEOUT
        out.extend(self._maybe_release(departure, now))
        return out

    def fence_ack(self, old: int, worker: Worker, now: float) -> list[Action[C]]:
        departure = self.departures.get(old)
        if departure is None:
            return []
        if worker in departure.late:
            departure.late.discard(worker)  # not the answer to the fence before RELEASE
            return []
        if worker in departure.pre_fences:
            # A worker answers its fences in order: its first answer is the earlier fence's.
            departure.pre_fences.discard(worker)
            return [] if departure.pre_fences else self._send_moving(departure, now)
        departure.fences.discard(worker)
        return self._maybe_release(departure, now)

    def _forward(
        self,
        departure: Departure,
        data: bytes | memoryview,
        flags: int,
        source: Hashable,
        now: float,
        record: object,
    ) -> Forward:
        assert departure.new is not None
        token = departure.tokens.get(source)
        if token is None:
            token = self.new_token(source, record)
        if flags & _MORE:
            departure.tokens[source] = token
        else:
            departure.tokens.pop(source, None)
        if departure.released:  # before, the deadline is the fences' (FENCE_TIMEOUT)
            departure.deadline = now + TOMBSTONE
        return Forward(departure.owner, departure.new, token, data, flags | _FORWARDED)

    def _send_moving(self, departure: Departure, now: float) -> list[Action[C]]:
        out: list[Action[C]] = [Send(departure.owner, HandoffKind.MOVING, departure.old)]
        out.extend(self._maybe_release(departure, now))
        return out

    def _maybe_release(
        self, departure: Departure, now: float, force: bool = False
    ) -> list[Action[C]]:
        if departure.released or departure.new is None or departure.pre_fences:
            return []  # MOVING goes first: RELEASE must not overtake it
        if departure.fences and not force:
            return []
        if departure.fences:
            logger.info("connection %x: no fence answer from %s", departure.old, departure.fences)
        departure.released = True
        departure.deadline = now + TOMBSTONE
        new = departure.new
        return [Send(conid_owner(new), HandoffKind.RELEASE, new), _UNLOCK]

    # -- any worker -----------------------------------------------------------------------------

    def fence(self, old: int, asker: Worker) -> list[Action[C]]:
        """FENCE: everything we sent for `old` is on the link before this answer."""
        return [Send(asker, HandoffKind.FENCE_ACK, old, worker_token(*self.me))]

    # -- the new owner --------------------------------------------------------------------------

    def taken_over(
        self, conn: C, old: int, came_from: Worker, new: int, now: float
    ) -> list[Action[C]]:
        """`conn`, moved here from `came_from` as `old`, is registered here as `new`."""
        self.holding[new] = now
        out: list[Action[C]] = [Send(came_from, HandoffKind.MOVED, old, 0, NEW_ID.pack(new))]
        arrived = self.arrived.pop(old, None)
        if arrived is None:
            self.waiting[old] = (conn, now)
            out.append(HoldReading(conn))
        else:
            out.append(SetReleaseLink(conn, arrived[1]))
        return out

    def moving(self, old: int, link: object, now: float) -> list[Action[C]]:
        """MOVING came on `link`: the connection may read (RELEASE will come on `link`)."""
        waiting = self.waiting.pop(old, None)
        if waiting is None:
            self.arrived[old] = (now, link)  # before its socket
            return []
        return [StartReading(waiting[0], link)]

    def release(self, new: int) -> list[Action[C]]:
        self.holding.pop(new, None)
        return [Release(new)]

    # -- time -----------------------------------------------------------------------------------

    def tick(self, now: float, peers: Peers) -> list[Action[C]]:
        """Once a second: timeouts (module docstring, step 5)."""
        out: list[Action[C]] = []
        for old, (conn, since) in list(self.waiting.items()):
            if now - since > HOLD_TIMEOUT:
                logger.warning("connection %x: no MOVING from its old worker; reading", old)
                del self.waiting[old]
                out.append(StartReading(conn, None))
        for old, (since, _link) in list(self.arrived.items()):
            if now - since > MOVED_TIMEOUT:
                del self.arrived[old]  # its socket never came
        for new, since in list(self.holding.items()):
            if now - since > HOLD_TIMEOUT:
                logger.warning("connection %x: no RELEASE from its old worker; releasing", new)
                out.extend(self.release(new))
        for departure in list(self.departures.values()):
            if departure.pre_fences or (departure.fences and not departure.released):
                out.extend(self._forget_exited(departure, peers.serving, now))
        dead: set[int] = set()
        for old, departure in list(self.departures.items()):
            if departure.pre_fences and now > departure.pre_fence_by:
                logger.info("connection %x: no fence answer from %s", old, departure.pre_fences)
                departure.late, departure.pre_fences = departure.pre_fences, set()
                out.extend(self._send_moving(departure, now))
            if now < departure.deadline:
                continue
            if departure.new is None:
                pid = peers.pids.get(departure.owner, 0)
                lives = pid != 0 and pid == (departure.owner_pid or pid)
                if lives and now - departure.since < HOLD_TIMEOUT:
                    if departure.deadline - departure.since <= MOVED_TIMEOUT:  # said once
                        logger.info(
                            "connection %x: no MOVED yet from %s; waiting", old, departure.owner
                        )
                    departure.deadline = now + 1.0  # slow, not dead (module docstring, step 5)
                    continue
                logger.warning(
                    "connection %x: its new worker never answered; %d frames lost",
                    old,
                    len(departure.queue),
                )
                out.append(Lost(old, len(departure.queue)))
                del self.departures[old]
                if not lives:
                    dead.add(old)
                out.append(_UNLOCK)
            elif not departure.released:
                out.extend(self._maybe_release(departure, now, force=True))
            else:
                del self.departures[old]
        if dead:
            out.append(Purge(frozenset(dead)))
        return out

    def _forget_exited(
        self, departure: Departure, live: frozenset[Worker], now: float
    ) -> list[Action[C]]:
        """Fenced workers that exited, or are about to with nothing left to send (EXITING),
        will not answer: stop waiting for them."""
        gone = (departure.pre_fences | departure.fences) - live
        if not gone:
            return []
        waiting = bool(departure.pre_fences)
        departure.late |= departure.pre_fences & gone
        departure.pre_fences -= gone
        departure.fences -= gone
        if waiting and not departure.pre_fences:
            return self._send_moving(departure, now)
        return self._maybe_release(departure, now)
