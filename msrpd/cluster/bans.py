"""Bans over the cluster (issue 17; README "Abuse limits"): AUTH failures from an address are
counted over every node, and ban_after of them within ban_window ban it on every node for
ban_time.

Rules:
- A failure (a worker's report, cluster/report.py) is one INCR of fails:<addr>, whose expiry
  is set by the first failure only (PEXPIRE NX): the window starts at the first failure, as
  on one node (shm/addrs.py).
- The failure that reaches ban_after writes ban:<addr> (its value the end, its TTL ban_time)
  with SET NX: when two nodes reach it at once only one bans, and only that one publishes the
  ban on the events channel. Every node (that one too) applies what it hears there to its
  shared ban table within the message's delivery time.
- A node that (re)connects reads every ban key (reload()): bans made while it could not hear
  them hold there too.
- What a peer publishes is checked (keys.decode_event, in agent.py) and an address longer
  than the ban table's key is refused: a bad message is logged, never applied. A ban heard
  or reloaded lasts at most ban_time from now (a forged or corrupt end, 1e300 or "inf", never
  bans for ever).
"""

from __future__ import annotations

import logging
import math
import time

from redis.asyncio import Redis

from ..config import LimitsSettings
from ..shm import ADDR_KEY_MAX, AddrTable, Counter
from .keys import BanEvent, Keys, encode_event
from .status import RedisStatus

__all__ = ["ClusterBans"]

logger = logging.getLogger(__name__)


class ClusterBans:
    def __init__(
        self, keys: Keys, node: str, limits: LimitsSettings, addrs: AddrTable, status: RedisStatus
    ) -> None:
        self.keys = keys
        self.node = node
        self.limits = limits
        self.addrs = addrs
        self.status = status

    async def failed(self, client: Redis, addr: str) -> int:
        """Count one failed AUTH from `addr` over the cluster (one MULTI: all or nothing);
        the cluster's count."""
        key = self.keys.fails(addr)
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, math.ceil(self.limits.ban_window * 1000), nx=True)
            count, _ = await pipe.execute()
        self.status.add(Counter.cluster_auth_failures)
        return int(count)

    async def ban_if_due(self, client: Redis, addr: str, count: int) -> None:
        """Ban `addr` when `count` failures (failed()'s) reach ban_after. Not done (Redis
        went down): the next failure, whose count is higher still, bans."""
        limits = self.limits
        if count < limits.ban_after:
            return
        until = time.time() + limits.ban_time
        ban = self.keys.ban(addr)
        if await client.set(ban, repr(until), px=math.ceil(limits.ban_time * 1000), nx=True):
            await client.delete(self.keys.fails(addr))
            self.status.add(Counter.cluster_bans_out)
            logger.warning(
                "cluster: banning %s on every node for %g s: %d failed AUTHs",
                addr,
                limits.ban_time,
                count,
            )
            await client.publish(self.keys.events, encode_event(BanEvent(self.node, addr, until)))

    def apply(self, addr: str, until: float, source: str) -> None:
        if len(addr.encode("utf-8", "surrogateescape")) > ADDR_KEY_MAX:
            logger.warning("cluster: ignoring a ban of an address too long: %r", addr[:80])
            return
        if not math.isfinite(until):
            logger.warning("cluster: ignoring a ban of %s until %r (by %s)", addr, until, source)
            return
        now = time.time()
        until = min(until, now + self.limits.ban_time)  # a forged or corrupt end: ban_time
        if until <= now:
            return
        # Counted also when this node had banned the address as long already (its own
        # workers count failures too, and may have banned it a moment after the agent did).
        if self.addrs.ban(addr, until) or self.addrs.banned(addr, until - 1.0):
            self.status.add(Counter.cluster_bans_in)
            logger.info("cluster: %s banned for %.0f s (by %s)", addr, until - now, source)

    async def reload(self, client: Redis) -> int:
        """Apply every ban Redis holds; how many there are."""
        keys = [key async for key in client.scan_iter(match=self.keys.ban_pattern(), count=500)]
        if not keys:
            return 0
        for key, value in zip(keys, await client.mget(keys), strict=True):
            try:
                until = float(value) if value is not None else 0.0
            except ValueError:
                logger.warning("cluster: ignoring ban key %r: value %r", key, value)
                continue
            self.apply(self.keys.ban_addr(key), until, "Redis")
        return len(keys)
