"""ConnStats: one connection's counters and session list, the record accounting reads.

It travels with the connection when it moves to another worker (colocate.py, handover.py),
so the accounting line covers the connection's whole life.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["ConnStats"]


@dataclass(slots=True, eq=False)
class ConnStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    """Bytes read from the wire (MSRP bytes)."""
    bytes_out: int = 0
    """Bytes written: also the output offset the sent log counts in (sentlog.py)."""
    opened: float = field(default_factory=time.monotonic)
    last_active: float = 0.0
    """When it last read anything (monotonic): idle_timeout and a stop's quiet count from it."""
    sessions: list[str] = field(default_factory=list)
    session_meta: dict[str, tuple[str, float]] = field(default_factory=dict)
    """sessid -> (user, wall-clock start), for the accounting line."""
    close_reason: str = ""
    proven: bool = False
    """A frame it sent was relayed through a token, or it authenticated: off probation
    ([limits], workers/limits.py)."""
    counted: bool = False
    """It counts against its source address's max_conns_per_addr (shm/addrs.py)."""
    auth_failures: int = 0
    """Failed AUTHs on it (auth_failures_close)."""
    rate_levels: tuple[float | None, ...] = ()
    """Moved here: its rate buckets' tokens as it left (wire.MoveState.rates), for the new
    buckets to start from (limits.py admit)."""
    handed: bool = False
    """Another worker handed it a frame: when it closes, the other workers are told, as their
    transactions may wait for an answer on it (txrelay.py)."""

    def __post_init__(self) -> None:
        self.last_active = self.last_active or self.opened

    def closing(self, reason: str) -> None:
        """Why it closes, unless a reason came first."""
        self.close_reason = self.close_reason or reason
