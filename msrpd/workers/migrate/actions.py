"""What the handover state machine (handover.py) returns: actions for its I/O layer
(handoverio.py) to carry out, in order; and what it is told of the other workers (Peers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from ..handoff import HandoffKind
from .state import Worker

__all__ = [
    "Action",
    "Forward",
    "HoldReading",
    "Lost",
    "NoteMoved",
    "Peers",
    "Purge",
    "Release",
    "Send",
    "SetReleaseLink",
    "StartReading",
    "Unlock",
]

C = TypeVar("C")
"""The connection, opaque to the machine: it only hands it back."""


@dataclass(frozen=True, slots=True)
class Peers:
    """The workers as the heartbeat table shows them now."""

    pids: Mapping[Worker, int]
    """Every worker with a process, and its pid."""
    serving: frozenset[Worker]
    """Those that serve connections (RUNNING or DRAINING; an EXITING one has none left)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send a connection-moving message to `worker` on the handoff link."""

    worker: Worker
    kind: HandoffKind
    conid: int
    token: int = 0
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Forward:
    """Forward a frame for a moved connection to its new id at worker `owner`."""

    owner: Worker
    new: int
    token: int
    data: bytes | memoryview
    flags: int


@dataclass(frozen=True, slots=True)
class NoteMoved:
    """Connection `old` is `new` at worker `owner` now (a late GONE's REPORT finds it)."""

    old: int
    owner: Worker
    new: int


@dataclass(frozen=True, slots=True)
class Unlock:
    """A move this worker started is over (released or failed): give the move lock back."""


@dataclass(frozen=True, slots=True)
class Lost:
    """The new owner never answered: the `frames` queued for `old` are lost."""

    old: int
    frames: int


@dataclass(frozen=True, slots=True)
class Purge:
    """Forget the sessions and registry entries of these ids (their new owner died)."""

    conids: frozenset[int]


@dataclass(frozen=True, slots=True)
class HoldReading(Generic[C]):
    """Taken over before MOVING came: `conn` reads nothing yet."""

    conn: C


@dataclass(frozen=True, slots=True)
class SetReleaseLink(Generic[C]):
    """MOVING came before the socket: `conn` reads, and RELEASE comes on `link`."""

    conn: C
    link: object


@dataclass(frozen=True, slots=True)
class StartReading(Generic[C]):
    """MOVING came (on `link`, where RELEASE follows; None: it never came): `conn` reads."""

    conn: C
    link: object


@dataclass(frozen=True, slots=True)
class Release:
    """Connection `conid` writes what it held back, and takes frames from everyone."""

    conid: int


Action: TypeAlias = (
    Send
    | Forward
    | NoteMoved
    | Unlock
    | Lost
    | Purge
    | HoldReading[C]
    | SetReleaseLink[C]
    | StartReading[C]
    | Release
)
