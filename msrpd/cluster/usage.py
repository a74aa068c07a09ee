"""Users' sessions over the cluster (issue 17): what makes `[limits] max_sessions_per_user`
and the user rates (workers/userrate.py) hold over every node, with no worker talking to
Redis.

Rules:
- Every heartbeat the agent counts each user's live sessions on this node (shm/usersess.py,
  alive while the cmap holds them) and writes them as usage:<node> (keys.py), replaced whole
  in one MULTI (no reader sees it half written), its TTL node_ttl; then it reads every other
  registered node's hash, adds them up per user, and writes the sums into shm/remoteusers.py,
  valid for node_ttl. So a session opened or ended on one node counts on the others within
  two heartbeats; an AUTH in between may be granted over the quota, by the sessions opened
  elsewhere in that time.
- A node gone: its hash expires with its registry entry (a clean stop deletes it at once),
  and its users' sessions stop counting elsewhere.
- A user name goes into Redis percent-encoded (every byte but letters, digits, `_.-~@` as
  %XX): exact whatever its bytes (a name that is not UTF-8 included), where the client's
  text decoding would replace them. A field not encoded so (a name written raw) is read as
  its UTF-8 bytes.
- A count that is not a whole number >= 0 is a peer's bad input: skipped and counted
  (cluster_bad_input). A user left out of the shared table for want of room counts this
  node alone: logged when their number changes, and shown (the gauge cluster_users_left_out).
- Redis down: the table is emptied, and the node says it counts its own sessions alone
  (workers enforce the quota and rates of this node, as without a cluster) until Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote_from_bytes, unquote_to_bytes

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..shm import Cmap, Counter, RemoteUsers, UserSessions
from .keys import Keys
from .pacing import stopped_within
from .status import RedisStatus

__all__ = ["ClusterUsage"]

logger = logging.getLogger(__name__)


class ClusterUsage:
    def __init__(
        self,
        keys: Keys,
        node: str,
        shm: tuple[UserSessions, Cmap, RemoteUsers],
        status: RedisStatus,
        period: tuple[float, float, float],
    ) -> None:
        """`period`: [cluster] heartbeat, node_ttl and timeout, in seconds."""
        self.keys = keys
        self.node = node
        self.users, self.cmap, self.remote = shm
        self.status = status
        self.heartbeat, self.ttl, self.timeout = period
        self.shared = False
        """The table holds the other nodes' counts (Redis answered since it was emptied)."""
        self.left_out = 0

    async def run(self, client: Redis, stop: asyncio.Event) -> None:
        """Every heartbeat until the stop (after a whole write) or until Redis fails (the error
        ends the agent's session with it)."""
        while True:
            await asyncio.wait_for(self.beat(client), self.timeout)
            if await stopped_within(stop, self.heartbeat):
                return

    async def beat(self, client: Redis) -> None:
        now = time.time()
        mine = self.users.live_counts(lambda s: self.cmap.lookup(s, now) is not None)
        key = self.keys.usage(self.node)
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if mine:
                pipe.hset(key, mapping={_text(user): count for user, count in mine.items()})
            pipe.pexpire(key, int(self.ttl * 1000))
            pipe.smembers(self.keys.nodes)
            nodes = sorted(str(n) for n in (await pipe.execute())[-1] if n != self.node)
        async with client.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self.keys.usage(node))
            hashes = await pipe.execute()
        self._store(hashes, time.time() + self.ttl)

    def _store(self, hashes: list[dict[str, str]], expires: float) -> None:
        totals: dict[bytes, int] = {}
        for counts in hashes:
            for user, count in counts.items():
                if not (
                    isinstance(count, str)
                    and count.isascii()
                    and count.isdigit()
                    and len(count) < 10
                ):
                    self.status.add(Counter.cluster_bad_input)
                    continue
                key = unquote_to_bytes(user)
                totals[key] = totals.get(key, 0) + int(count)
        left_out = self.remote.replace(totals, expires)
        self.status.counters.values[Counter.cluster_users_left_out] = left_out
        if left_out != self.left_out and left_out:
            logger.warning(
                "cluster: %d users with sessions on other nodes found no room in the shared "
                "table: their quota and rates count this node's sessions alone",
                left_out,
            )
        elif left_out != self.left_out:
            logger.info("cluster: every user with sessions on other nodes is counted again")
        self.left_out = left_out
        self.shared = True

    def went_down(self) -> None:
        """Redis is unreachable: each node counts its own users' sessions."""
        self.remote.clear()
        self.status.counters.values[Counter.cluster_users_left_out] = 0
        self.left_out = 0
        if self.shared:
            logger.warning(
                "cluster: max_sessions_per_user and the user rates count this node's "
                "sessions alone until Redis is back"
            )
        self.shared = False

    def leave(self, pipe: Pipeline) -> None:
        """A clean stop: this node's sessions stop counting at once."""
        pipe.delete(self.keys.usage(self.node))


def _text(user: bytes) -> str:
    """A user's hash field: its key's bytes percent-encoded, ASCII (redis-py's text encoding
    would turn bytes that are not UTF-8 into "?")."""
    return quote_from_bytes(user, safe="@")
