"""LiveWorkers: which worker processes are alive, from the heartbeats, read seldom.

Why: the transaction layer asks per response handed to another worker (is the worker a
transaction id names alive?) and per closed connection (which workers may wait on it?);
reading the heartbeat table each time would cost more than either (txrelay.py).

Rules: the set is trusted for TTL seconds; a worker not in it makes it be read again, at
most every RETRY seconds (a peer choosing transaction ids cannot make us read it per frame).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..shm import HeartbeatRecord

__all__ = ["RETRY", "TTL", "LiveWorkers"]

TTL = 1.0
"""Seconds the set of live workers is trusted."""
RETRY = 0.1
"""Seconds between two reads caused by a worker not in the set."""

Worker = tuple[int, int]
"""(slot, generation)."""


class Beats(Protocol):
    """The heartbeat table (shm.Heartbeats)."""

    def live(self) -> Iterable[HeartbeatRecord]: ...


class LiveWorkers:
    __slots__ = ("_beats", "_clock", "_read", "workers")

    def __init__(self, beats: Beats, clock: Callable[[], float] = time.monotonic) -> None:
        self._beats = beats
        self._clock = clock
        self.workers: frozenset[Worker] = frozenset()
        self._read = -math.inf

    def __contains__(self, worker: Worker) -> bool:
        """`worker` is alive (read again when it is not known and RETRY has passed)."""
        age = self._clock() - self._read
        if age >= TTL or (worker not in self.workers and age >= RETRY):
            self._refresh()
        return worker in self.workers

    def current(self) -> frozenset[Worker]:
        """Every live worker, as read at most TTL seconds ago."""
        if self._clock() - self._read >= TTL:
            self._refresh()
        return self.workers

    def _refresh(self) -> None:
        self.workers = frozenset((r.slot, r.generation) for r in self._beats.live() if r.pid)
        self._read = self._clock()
