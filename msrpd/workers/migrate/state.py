"""What a connection carries for migration: its colocation bookkeeping, and, just after a
move to this worker, what it holds back (handover.py explains both)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Arrival", "HeldWrite", "MigrationState", "Worker", "token_worker", "worker_token"]

Worker = tuple[int, int]
"""A worker process: (slot, generation)."""


def worker_token(slot: int, generation: int) -> int:
    """A worker's (slot, generation) in a handoff token (u32: FENCE, FENCE_ACK, PULL)."""
    return slot << 16 | generation


def token_worker(token: int) -> Worker:
    return token >> 16, token & 0xFFFF


HeldWrite = tuple[bytes | memoryview, bool, Hashable, bool]
"""A write held back until RELEASE: (data, close_after, source, more)."""


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
    move_retry_at: float = 0.0
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
    """A connection just moved to this worker, until it reads freely and writes freely."""

    carried: bytes
    """Bytes the old worker's reader held, then any read while reading is held: read first."""
    on_taken_over: Callable[[Any], None] | None = None
    """Called with the connection once it is registered here (handoverio.py)."""
    held: list[HeldWrite] | None = field(default_factory=list)
    """Frames held back until the old worker's RELEASE; None once released."""
    held_bytes: int = 0
    reading_held: bool = False
    """Reads nothing until MOVING (its frames must not overtake those the old worker relayed)."""
    eof_held: bool = False
    release_link: object = None
    """The handoff link RELEASE comes on: never paused for what is held."""

    def hold(self, write: HeldWrite) -> None:
        """Keep `write` back until RELEASE (held is not None)."""
        assert self.held is not None
        self.held.append(write)
        self.held_bytes += len(write[0])

    def take_held(self) -> list[HeldWrite]:
        """RELEASE, or a stop giving up: what was held back, in order; nothing is held from
        now on."""
        held, self.held, self.held_bytes = self.held or [], None, 0
        self.release_link = None
        return held
