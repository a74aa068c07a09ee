"""RedisStatus: whether this node reaches Redis, as it tells its operator (issue 17): one log
line when Redis goes and one when it returns (never one per retry), the gauge
cluster_redis_up and the outage count cluster_redis_lost in the agent's stats slot
(`stats.get`, the metrics endpoint, `core.ps`), and the agent's counters.
"""

from __future__ import annotations

import logging
import time

from ..shm import Counter, Stats, StatsCounters

__all__ = ["RedisStatus"]

logger = logging.getLogger(__name__)


class RedisStatus:
    def __init__(self, url: str, stats: Stats, index: int) -> None:
        self.url = url
        """The Redis URL as it may be shown (config/secret.py: SecretUrl.redacted)."""
        self.stats = stats
        self.index = index
        self.counters = StatsCounters()
        self.up: bool | None = None
        """None until the first connect succeeds or fails."""
        self.since = time.monotonic()
        self.reason = "not connected yet"

    def add(self, counter: Counter, n: int = 1) -> None:
        self.counters.add(counter, n)

    def went_up(self) -> None:
        if self.up:
            return
        if self.up is None:
            logger.info("cluster: connected to Redis at %s", self.url)
        else:
            down = time.monotonic() - self.since
            logger.warning("cluster: Redis at %s is back after %.1f s", self.url, down)
        self.up, self.since, self.reason = True, time.monotonic(), ""
        self.counters.values[Counter.cluster_redis_up] = 1
        self.publish()

    def went_down(self, reason: str) -> None:
        self.reason = reason
        if self.up is False:
            return
        logger.error(
            "cluster: Redis at %s unreachable (%s): relaying this node's sessions alone, retrying",
            self.url,
            reason,
        )
        if self.up:
            self.add(Counter.cluster_redis_lost)
        self.up, self.since = False, time.monotonic()
        self.counters.values[Counter.cluster_redis_up] = 0
        self.publish()

    def publish(self) -> None:
        self.stats.publish(self.index, self.counters)
