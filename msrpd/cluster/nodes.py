"""The node registry (issue 17): every node's name, Use-Path address, workers, sessions and
health in Redis, renewed every heartbeat and expiring node_ttl after the last one, so a node
that stops writing shows as lost.

Health: "ok" when every worker slot runs, "degraded" when some do not (booting, dead,
respawning); a listed node with no entry left is "lost". A clean stop removes the node from
the registry as it begins.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from ..config import Settings
from ..shm import Heartbeats, WorkerState
from .keys import Keys

__all__ = ["NodeRegistry"]

_FIELDS = ("addr", "workers", "children", "sessions", "health", "beat", "pid")


class NodeRegistry:
    def __init__(self, keys: Keys, settings: Settings, heartbeats: Heartbeats) -> None:
        self.keys = keys
        self.settings = settings
        self.heartbeats = heartbeats
        self.name = settings.cluster.node

    def health(self) -> tuple[int, str]:
        """Running workers, and the node's health."""
        running = sum(1 for r in self.heartbeats.live() if r.state == WorkerState.RUNNING)
        return running, "ok" if running >= self.settings.core.children else "degraded"

    def write(self, pipe: Pipeline, sessions: int) -> None:
        """Add this node's heartbeat to `pipe`."""
        running, health = self.health()
        key, cluster = self.keys.node(self.name), self.settings.cluster
        entry: dict[FieldT, EncodableT] = {
            "addr": self.settings.msrp.use_path_addr or "",
            "workers": running,
            "children": self.settings.core.children,
            "sessions": sessions,
            "health": health,
            "beat": repr(time.time()),
            "pid": os.getppid(),  # the supervisor's: the node's pid as its operator knows it
        }
        pipe.hset(key, mapping=entry)
        pipe.pexpire(key, math.ceil(cluster.node_ttl * 1000))
        pipe.sadd(self.keys.nodes, self.name)

    def leave(self, pipe: Pipeline) -> None:
        pipe.delete(self.keys.node(self.name))
        pipe.srem(self.keys.nodes, self.name)

    async def listing(self, client: Redis) -> list[dict[str, Any]]:
        """Every registered node, by name."""
        names = sorted(str(name) for name in await client.smembers(self.keys.nodes))
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(self.keys.node(name), list(_FIELDS))
            rows = await pipe.execute()
        now = time.time()
        return [
            _row(name, values, name == self.name, now)
            for name, values in zip(names, rows, strict=True)
        ]


def _row(name: str, values: list[str | None], me: bool, now: float) -> dict[str, Any]:
    entry = dict(zip(_FIELDS, values, strict=True))
    if entry["health"] is None:
        return {"node": name, "self": me, "health": "lost"}
    return {
        "node": name,
        "self": me,
        "addr": entry["addr"],
        "workers": _int(entry["workers"]),
        "children": _int(entry["children"]),
        "sessions": _int(entry["sessions"]),
        "health": entry["health"],
        "age": _age(entry["beat"], now),
        "pid": _int(entry["pid"]),
    }


def _age(beat: str | None, now: float) -> float | None:
    try:
        age = now - float(beat or "")
    except ValueError:
        return None  # not written by an msrpd node
    return round(age, 1) if math.isfinite(age) else None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None
