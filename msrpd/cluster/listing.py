"""`msrp.cmaplist cluster` (issue 17): the sessions of the other nodes, from the directory
(sess:<token> -> node, expiring with the token). The supervisor adds this node's own from
its cmap, which is exact at once; another node's appear and go at its next heartbeat after
the cmap changed (directory.py).
"""

from __future__ import annotations

import time
from typing import Any, Final

from redis.asyncio import Redis

from .keys import Keys

__all__ = ["other_sessions"]

_BATCH: Final = 1000


async def other_sessions(client: Redis, keys: Keys, node: str) -> list[dict[str, Any]]:
    """{"sessid", "node", "expires" (Unix time, None without a TTL)} of every directory
    entry naming another node, by node then session id."""
    found = [key async for key in client.scan_iter(match=keys.session_pattern(), count=_BATCH)]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(found), _BATCH):
        batch = found[start : start + _BATCH]
        async with client.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.get(key)
                pipe.pttl(key)
            answers = await pipe.execute()
        now = time.time()
        for i, key in enumerate(batch):
            owner, ttl = answers[2 * i], answers[2 * i + 1]
            if owner is None or owner == node:  # gone since the scan, or ours (the cmap's)
                continue
            expires = now + ttl / 1000 if isinstance(ttl, int) and ttl >= 0 else None
            rows.append({"sessid": keys.token(key), "node": owner, "expires": expires})
    rows.sort(key=lambda row: (row["node"], row["sessid"]))
    return rows
