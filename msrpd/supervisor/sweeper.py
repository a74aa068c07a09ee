"""Expired items out of the shared tables (cmap, htable, the limits' tables), every
msrp.timer_interval seconds, from the supervisor's loop: workers never sweep, so a frame never
waits for one."""

from __future__ import annotations

import logging
import time

from ..shm import ShmSet

__all__ = ["Sweeper"]

logger = logging.getLogger(__name__)


class Sweeper:
    def __init__(self, shm: ShmSet) -> None:
        self.shm = shm
        self.next_sweep = 0.0

    def sweep(self, interval: float) -> None:
        """Sweep every stripe if `interval` seconds passed since the last sweep."""
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + interval
        wall = time.time()
        for name, table in (("cmap", self.shm.cmap), ("htable", self.shm.htable)):
            removed = sum(table.sweep_stripe(i, wall) for i in range(table.n_stripes))
            if removed:
                logger.info("%s: %d expired items removed", name, removed)
        addrs, users, cmap = self.shm.addrs, self.shm.users, self.shm.cmap
        for i in range(addrs.n_stripes):
            addrs.sweep_stripe(i, wall)

        def alive(sessid: str) -> bool:
            return cmap.lookup(sessid, wall) is not None

        for i in range(users.n_stripes):
            users.sweep_stripe(i, alive)  # users none of whose sessions is left
