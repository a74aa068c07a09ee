"""ClusterUsage (cluster/usage.py) against a real redis-server and real shared memory: what a
node publishes of its users' sessions, what it sums of the others', what it refuses of a
peer's hash, a table too small for every user, and Redis going away."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from msrpd.cluster.agent import DOWN
from msrpd.cluster.keys import Keys
from msrpd.cluster.status import RedisStatus
from msrpd.cluster.usage import ClusterUsage
from msrpd.shm import CmapEntry, Counter, ShmLayout, ShmSet, instance_prefix, unlink_stale

from .redisserver import RedisServer

KEYS = Keys("t:")


@pytest.fixture
def shm() -> Iterator[ShmSet]:
    run_dir = Path(tempfile.mkdtemp(prefix="mcu-", dir="/tmp"))
    layout = ShmLayout(
        instance_prefix(run_dir), run_dir / "cmap.lock", 4, 64, 64, 8, users_capacity=8
    )
    made = layout.create_all()
    try:
        yield made
    finally:
        made.close()
        made.unlink()
        unlink_stale(f"{layout.prefix}-")
        shutil.rmtree(run_dir, ignore_errors=True)


def _usage(shm: ShmSet) -> tuple[ClusterUsage, RedisStatus]:
    status = RedisStatus("redis://127.0.0.1/0", shm.stats, 0)
    usage = ClusterUsage(
        KEYS, "n1", (shm.users, shm.cmap, shm.remote_users), status, (0.1, 2.0, 1.0)
    )
    return usage, status


def _hold(shm: ShmSet, user: str, sessid: str) -> None:
    assert shm.users.claim(user, sessid, 10, lambda s: True).value == "granted"
    assert shm.cmap.save(CmapEntry(sessid, 1, "", "", "", time.time() + 60))


def test_a_node_publishes_its_users_and_sums_the_others(
    redis_server: RedisServer, shm: ShmSet
) -> None:
    _hold(shm, "alice", "a1")
    _hold(shm, "alice", "a2")
    _hold(shm, "bob", "b1")
    shm.users.claim("carol", "c1", 10, lambda s: True)  # its session is in no cmap: ended
    usage, status = _usage(shm)
    with redis_server.client() as redis:
        redis.sadd("t:nodes", "n1", "n2", "n3", "n4")
        redis.hset("t:usage:n2", mapping={"alice": "1", "dave": "2", "bad": "x", "neg": "-1"})
        redis.hset("t:usage:n3", mapping={"alice": "3", "huge": "9" * 12, "eve": "²"})
        redis.hset("t:usage:n9", mapping={"alice": "5"})  # not a registered node
        redis.hset("t:usage:n1", mapping={"stale": "7"})  # what a predecessor left

    async def main() -> None:
        client = Redis(port=redis_server.port, decode_responses=True)
        try:
            await usage.beat(client)
        finally:
            await client.aclose()

    asyncio.run(main())
    with redis_server.client() as redis:
        assert redis.hgetall("t:usage:n1") == {"alice": "2", "bob": "1"}
        assert 1000 < redis.pttl("t:usage:n1") <= 2000
    now = time.time()
    remote = shm.remote_users
    assert [remote.sessions(u, now) for u in ("alice", "bob", "dave", "bad", "stale")] == [
        4,
        0,
        2,
        0,
        0,
    ]
    assert remote.count() == 2  # alice and dave
    assert status.counters.values[Counter.cluster_bad_input] == 4  # x, -1, 12 digits, ²
    assert status.counters.values[Counter.cluster_users_left_out] == 0


def test_a_user_name_that_is_not_utf8_keeps_its_counts_over_the_cluster(
    redis_server: RedisServer, shm: ShmSet
) -> None:
    """A digest username's bytes need not be UTF-8 (the key keeps them: usersess.user_key):
    node n1 publishes it, node n2 sums it under the very same key, with the agent's client
    settings (a text client replacing what it cannot decode)."""
    odd = b"caf\xe9-%41\xff".decode("utf-8", "surrogateescape")  # Latin-1, a "%", a 0xff
    _hold(shm, odd, "o1")
    _hold(shm, odd, "o2")
    _hold(shm, "dave@example.com", "d1")
    n1, _ = _usage(shm)
    n2 = ClusterUsage(
        KEYS, "n2", (shm.users, shm.cmap, shm.remote_users), n1.status, (0.1, 2.0, 1.0)
    )
    with redis_server.client() as redis:
        redis.sadd("t:nodes", "n1", "n2", "n3")
        redis.hset("t:usage:n3", mapping={"erin": "1"})  # a raw name (an older node): as is

    async def main() -> None:
        client = Redis(port=redis_server.port, decode_responses=True, encoding_errors="replace")
        try:
            await n1.beat(client)
            shm.remote_users.replace({}, 0)
            await n2.beat(client)  # n2 sums n1's and n3's hashes (what it writes is unread)
        finally:
            await client.aclose()

    asyncio.run(main())
    with redis_server.client() as redis:
        assert redis.hgetall("t:usage:n1") == {"caf%E9-%2541%FF": "2", "dave@example.com": "1"}
    now = time.time()
    remote = shm.remote_users
    assert remote.sessions(odd, now) == 2
    assert remote.sessions("caf\ufffd-%41\ufffd", now) == 0
    assert remote.sessions("dave@example.com", now) == 1
    assert remote.sessions("erin", now) == 1
    assert remote.count() == 3


def test_users_beyond_the_table_are_left_out_logged_and_shown(
    redis_server: RedisServer, shm: ShmSet, caplog: pytest.LogCaptureFixture
) -> None:
    usage, status = _usage(shm)
    with redis_server.client() as redis:
        redis.sadd("t:nodes", "n2")
        redis.hset("t:usage:n2", mapping={f"user{i}": "1" for i in range(20)})  # 8 slots

    async def main() -> int:
        client = Redis(port=redis_server.port, decode_responses=True)
        try:
            with caplog.at_level(logging.INFO, "msrpd.cluster.usage"):
                await usage.beat(client)
                await usage.beat(client)  # the same number: not logged again
                stored = shm.remote_users.count()
                assert status.counters.values[Counter.cluster_users_left_out] == 20 - stored
                redis_server.stop()
                with pytest.raises(DOWN):
                    await usage.beat(client)
                usage.went_down()
                return stored
        finally:
            await client.aclose()

    stored = asyncio.run(main())
    assert 0 < stored < 20
    left = [r.getMessage() for r in caplog.records if "found no room" in r.getMessage()]
    assert left == [
        f"cluster: {20 - stored} users with sessions on other nodes found no room in the shared "
        "table: their quota and rates count this node's sessions alone"
    ]
    # Redis gone: the table emptied, the gauge back to 0, and the node says it counts alone.
    assert shm.remote_users.count() == 0
    assert status.counters.values[Counter.cluster_users_left_out] == 0
    assert any(
        "count this node's sessions alone until Redis is back" in r.getMessage()
        for r in caplog.records
    )


class _BrokenHeartbeats:
    """Heartbeats whose reading fails (a shared-memory region gone under the agent)."""

    def live(self) -> list[object]:
        raise OSError("the heartbeats region is gone")


def test_a_listing_that_fails_here_is_answered_with_its_error(redis_server: RedisServer) -> None:
    """A node that cannot list its connections says so to the asker, who then names the
    error instead of reporting the node silent after the whole wait."""
    from msrpd.cluster.keys import ListedEvent, ListEvent, decode_event
    from msrpd.cluster.listconns import ClusterConns

    keys = Keys("msrpd:")
    conns = ClusterConns(keys, "n2", _BrokenHeartbeats(), Path("/nonexistent"), 1.0)  # type: ignore[arg-type]

    async def main() -> ListedEvent:
        client = Redis(port=redis_server.port, decode_responses=True)
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.events)
        try:
            conns.heard_list(client, ListEvent("n1", "req1"))
            async with asyncio.timeout(5):
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        event = decode_event(message["data"])
                        assert isinstance(event, ListedEvent)
                        return event
        finally:
            await pubsub.aclose()
            await client.aclose()

    answer = asyncio.run(main())
    assert (answer.node, answer.to, answer.id, answer.rows) == ("n2", "n1", "req1", None)
    assert answer.error == "listing failed: the heartbeats region is gone"
