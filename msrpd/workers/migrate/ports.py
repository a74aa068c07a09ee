"""What the migration code needs of a connection and of its worker, as Protocols: the
connection (workers/conn.py) and the worker context (workers/context.py) import this package,
so this package names them only by what it uses of them (no import circle)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ...protocol import FrameReader
from ...shm import Cmap, Registry, StatsCounters
from ..connstats import ConnStats
from ..handoff import HandoffKind
from ..transports.base import Wire
from .state import Arrival, MigrationState, Worker

__all__ = [
    "BatchPort",
    "Conn",
    "ConnT",
    "HandoffsPort",
    "HubPort",
    "LinkConn",
    "SentPort",
    "StopPort",
    "WorkerPort",
]


class Conn(Protocol):
    """A connection that may move: what colocate.py, handoverio.py and retire.py use."""

    migration: MigrationState
    arrival: Arrival | None
    closed: bool
    stats: ConnStats
    """Its counters and sessions: they travel with it (wire.MoveState)."""

    @property
    def conid(self) -> int: ...

    @property
    def wire(self) -> Wire:
        """Its socket (through the transport) and the listener it came in on."""

    def bytes_to_carry(self) -> bytes | None:
        """What its reader holds (a copy), when it could move now: between frames, nothing
        to write or held back, not paused; else None."""

    def block(self, dest: Hashable) -> None:
        """Read nothing until unblock(dest) (intake.py)."""

    def unblock(self, dest: Hashable) -> None: ...

    def rate_levels(self) -> tuple[float | None, ...]:
        """Its [limits] rate buckets' tokens now, () without any (MoveHooks.rate_levels)."""

    def carry_size(self) -> int:
        """How much of the frames read it would carry now, -1 in the middle of a streamed
        frame: nothing copied (MoveHooks.carry_size)."""

    def arrive(self, carried: bytes, on_taken_over: Callable[[Any], None]) -> None: ...

    def release_on(self, link: object) -> None: ...

    def hold_reading(self) -> None: ...

    def start_reading(self) -> None: ...

    def release(self) -> None: ...


class Blockers(Protocol):
    """A connection's intake (intake.py), as retirelinks.py sees it: what pauses it, and
    the answers waiting for the end of the chunk being read."""

    @property
    def blockers(self) -> object: ...

    @property
    def held_replies(self) -> object: ...


class LinkConn(Protocol):
    """A connection the relay opened to a next hop, as retirelinks.py sees it."""

    @property
    def outbound(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    @property
    def conid(self) -> int: ...

    @property
    def peer_key(self) -> str: ...

    @property
    def stats(self) -> ConnStats: ...

    @property
    def unsent(self) -> bool: ...

    @property
    def reader(self) -> FrameReader: ...

    @property
    def stream_sink(self) -> object: ...

    @property
    def intake(self) -> Blockers: ...

    def close(self, reason: str = ...) -> None: ...


ConnT = TypeVar("ConnT", bound=Conn)


class HubPort(Protocol):
    """The handoff links (links.py), as the handover uses them."""

    def send(
        self,
        dest_path: Path,
        conid: int,
        token: int,
        parts: Sequence[bytes | memoryview],
        flags: int = ...,
    ) -> None: ...


class BatchPort(Protocol):
    def flush_now(self) -> None:
        """Write what this read's work produced now (batch.py)."""


class StopPort(Protocol):
    @property
    def stopping(self) -> bool:
        """A graceful stop reads no more (stopstate.py)."""


class SentPort(Protocol):
    """The handoff tokens and what they carried (gone.py)."""

    def new_token(self, record: Any = ...) -> int: ...

    def note_forward(self, token: int, source: object) -> None: ...

    def note_moved(self, old: int, path: Path, new: int) -> None: ...


class HandoffsPort(Protocol):
    """Sending to other workers (handoffout.py)."""

    @property
    def sent(self) -> SentPort: ...

    def path(self, slot: int, generation: int) -> Path: ...

    def control(
        self, worker: Worker, kind: HandoffKind, conid: int, token: int = ..., payload: bytes = ...
    ) -> None: ...

    def throttle(self, path: Path, reader: Any) -> None: ...


class WorkerPort(Protocol[ConnT]):
    """The worker's shared resources, as the migration code uses them (context.py)."""

    @property
    def conns(self) -> dict[int, ConnT]: ...

    @property
    def hub(self) -> HubPort | None: ...

    @property
    def cmap(self) -> Cmap | None: ...

    @property
    def registry(self) -> Registry | None: ...

    @property
    def counters(self) -> StatsCounters: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def batch(self) -> BatchPort: ...

    @property
    def stop(self) -> StopPort: ...

    @property
    def handoffs(self) -> HandoffsPort: ...

    def serve_socket(self, conn: ConnT, sock: socket.socket) -> None: ...
