"""CmapWatch: when the cluster agent reads the whole cmap for the directory (directory.py).

Reading it costs time in proportion to its capacity (about 10 ms for the default 32,768
entries when empty, 30 ms with 10,000 sessions, on this project's machines), so the agent
reads it only when it may have changed: its entry count moved, or the workers counted a
successful AUTH (auth_ok: a new session or a re-AUTH's new expiry, which leave the count as
it was when one session ends as another starts). Workers publish their counters once a
second, so such a change is seen within a second or two; a full read every RESCAN seconds
catches whatever else there is.
"""

from __future__ import annotations

import time
from typing import Final

from ..shm import ShmSet

__all__ = ["RESCAN", "CmapWatch"]

RESCAN: Final = 30.0


class CmapWatch:
    def __init__(self, shm: ShmSet) -> None:
        self.shm = shm
        self.seen: tuple[int, int] | None = None
        self.read_at = 0.0

    def _mark(self) -> tuple[int, int]:
        shm = self.shm
        auths = sum(shm.stats.slot(r.index)["auth_ok"] for r in shm.heartbeats.live())
        return shm.cmap.count(), auths

    def changed(self, *, force: bool = False) -> dict[str, float] | None:
        """Token -> expiry of every session when the cmap may have changed since the last
        read (or `force`), else None."""
        mark, now = self._mark(), time.monotonic()
        if not force and mark == self.seen and now - self.read_at < RESCAN:
            return None
        self.seen, self.read_at = mark, now
        return self.shm.cmap.expiries()
