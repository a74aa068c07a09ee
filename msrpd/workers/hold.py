"""Hold: the frames a connection just moved to this worker keeps back until its old worker's
RELEASE (migrate/handover.py explains why: what the old worker relayed goes out first).

The outbox owns it (outbox.py): a frame the old worker forwarded goes out at once, any other
waits here, in order, and counts toward the connection's congestion.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["HeldWrite", "Hold"]

HeldWrite = tuple[bytes | memoryview, bool, Hashable, bool]
"""A write held back until RELEASE: (data, close_after, source, more)."""


class Hold:
    __slots__ = ("nbytes", "release_link", "writes")

    def __init__(self) -> None:
        self.writes: list[HeldWrite] = []
        self.nbytes = 0
        self.release_link: object = None
        """The handoff link RELEASE comes on: never paused for what is held."""

    def add(self, write: HeldWrite) -> None:
        self.writes.append(write)
        self.nbytes += len(write[0])
