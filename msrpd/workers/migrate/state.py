"""What a connection carries for migration: its colocation bookkeeping, and, just after a
move to this worker, what it holds back (handover.py explains both)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Arrival", "MigrationState", "Worker", "token_worker", "worker_token"]

Worker = tuple[int, int]
"""A worker process: (slot, generation)."""


def worker_token(slot: int, generation: int) -> int:
    """A worker's (slot, generation) in a handoff token (u32: FENCE, FENCE_ACK, PULL)."""
    return slot << 16 | generation


def token_worker(token: int) -> Worker:
    return token >> 16, token & 0xFFFF


@dataclass(slots=True, eq=False)
class MigrationState:
    """A connection's balancing and colocation state (balance.py, colocate.py)."""

    balance: bool = False
    """Just accepted here: may be passed to a less loaded worker (balance.py)."""
    movable: bool = False
    """A plain TCP connection a client opened: may move to another worker."""
    passed: bool = False
    """Its socket went to another worker: closing here is not the session's end."""
    streak: int = 0
    """Frames in a row relayed to connections of `streak_owner`."""
    streak_owner: Worker | None = None
    move_to: tuple[Worker, int] | None = None
    """(worker, connection id) it should join, once its read is done."""
    streamed: bool = False
    """The wish to move came from a streamed frame: at its end, with more of the next frame
    read than a move carries, its peer is asked to come (colocate.py)."""
    big: bool = False
    """The wish came from a big frame: while its peer is asked to come, it reads nothing for
    QUIESCE seconds, so that the peer runs out of bytes to write and can go (colocate.py)."""
    move_retry_at: float = 0.0
    wish_moves: int = 0
    """The handover's count of moves when move_to was set: a connection moved in or out
    since (perhaps the peer, come here) makes that wish stale (colocate.py)."""
    others_at: float = 0.0
    """When it last relayed to a worker other than the one of its streak (monotonic)."""
    moves: int = 0
    handovers: int = 0
    """Of its moves, those a reload made (retire.py): they do not count against MAX_MOVES."""
    former: tuple[int, ...] = ()
    """Its ids at the workers it moved from: a response to a request the relay sent it
    before a move still matches its transaction (transactions.py)."""
    tx_open: int = 0
    """Live transactions of requests it sent (transactions.py): it does not move meanwhile."""

    @property
    def colocated(self) -> int:
        """How often colocation moved it."""
        return self.moves - self.handovers


@dataclass(slots=True, eq=False)
class Arrival:
    """A connection just moved to this worker, until it reads freely and writes freely (what
    it holds back from writing is its outbox's, hold.py)."""

    carried: bytes
    """Bytes the old worker's reader held, then any read while reading is held: read first."""
    on_taken_over: Callable[[Any], None] | None = None
    """Called with the connection once it is registered here (handoverio.py)."""
    reading_held: bool = False
    """Reads nothing until MOVING (its frames must not overtake those the old worker relayed)."""
    eof_held: bool = False
