"""StopState: where a worker is in its graceful stop, one object for everyone who asks.

The worker's SIGTERM handler and GracefulStop (stopping.py) set it; connections, the handoff
hub and the GONE memory read it. Nothing else is parked on shared objects for the stop.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUIET", "StopState"]

QUIET = 0.25
"""Seconds without input after which a connection counts as done sending (graceful stop)."""


@dataclass(slots=True, eq=False)
class StopState:
    stopping: bool = False
    """Graceful stop (SIGTERM): connections read no new frame, a handoff peer's EOF means
    "done sending" (links.py), and nothing sent is forgotten (gone.py)."""
    given_up: bool = False
    """The stop's deadline is near: what is still unsent was reported, nothing more is read,
    and frames other workers hand over are refused (GONE)."""
