"""ClusterKills.close() (cluster/kills.py), which the agent awaits at its stop: a kill a peer
asked for and still in progress is cancelled and awaited, none left pending; a real
redis-server and a real cmap."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from redis.asyncio import Redis

from msrpd.cluster.keys import Keys, KillEvent
from msrpd.cluster.kills import ClusterKills
from msrpd.shm import ShmLayout, instance_prefix, unlink_stale

from .redisserver import RedisServer


def test_kills_in_progress_end_with_the_agent(redis_server: RedisServer) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="mkc-", dir="/tmp"))
    layout = ShmLayout(instance_prefix(run_dir), run_dir / "cmap.lock", 4, 64, 64, 8)
    shm = layout.create_all()

    async def main() -> None:
        client = Redis(port=redis_server.port, decode_responses=True)
        try:
            kills = ClusterKills(Keys("t:"), "n1", shm.cmap, run_dir, 1.0)
            kills.heard_kill(client, KillEvent("n2", "n1", "sess-1", "r1"))
            kills.heard_kill(client, KillEvent("n2", "n3", "sess-2", "r2"))  # not ours
            (task,) = kills.acting
            await kills.close()
            assert task.cancelled()
            assert kills.acting == set()
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
    finally:
        shm.close()
        shm.unlink()
        unlink_stale(f"{layout.prefix}-")
        shutil.rmtree(run_dir, ignore_errors=True)
