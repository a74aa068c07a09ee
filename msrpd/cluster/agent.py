"""The cluster agent: the one process of a node that talks to Redis (the package docstring has
the strategy). The supervisor forks it (supervisor/agentproc.py) and runs run_agent() in it.

Rules:
- One connection at a time, each a session: PING, subscribe to the events channel, reload
  the bans, adopt this node's directory entries (first session only), write the whole
  directory, then until it fails: every heartbeat the node's registry entry and the
  directory's changes (when the cmap may have changed: cmapwatch.py) in one pipeline;
  the events heard; the workers' reports counted; the users' sessions over the cluster
  (usage.py), on a heartbeat of their own. Any Redis or socket error, or a command
  over [cluster] timeout, ends the session: Redis is down (status.py) and the agent connects
  again after a wait that doubles from RETRY_FIRST up to retry_max, forever.
- Redis down changes nothing for the workers: they relay, count and ban on this node alone.
- SIGTERM (the supervisor's stop): the node leaves the registry and removes its directory
  entries (its sessions end with it), then the agent exits. SIGUSR2 (a reload): it exits
  without leaving, and its successor, with the new settings, takes over what it wrote. A
  supervisor that died leaves the agent orphaned: it notices within a heartbeat and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import uvloop
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..config import Settings
from ..process.logs import reopen_logs
from ..process.title import set_title
from ..rundir import AGENT_INDEX, agent_ctl_path, agent_report_path, agent_where_path
from ..shm import Counter, ShmLayout, ShmSet
from ..workers.ctl import WorkerCtlServer, set_log_level
from .bans import ClusterBans
from .cmapwatch import CmapWatch
from .directory import Directory
from .inbox import ReportInbox
from .keys import BanEvent, Event, Keys, KilledEvent, KillEvent, ListEvent, decode_event
from .kills import ClusterKills
from .listconns import ClusterConns
from .listing import other_sessions
from .nodes import NodeRegistry
from .owners import OwnerDesk
from .pacing import stopped_within
from .status import RedisStatus
from .usage import ClusterUsage

__all__ = ["RETRY_FIRST", "ClusterAgent", "run_agent"]

logger = logging.getLogger(__name__)

RETRY_FIRST: Final = 0.1
_T = TypeVar("_T")
DOWN: Final = (RedisError, OSError, TimeoutError)
"""What ends a session with Redis: it is down (or not Redis)."""


def run_agent(settings: Settings, layout: ShmLayout, supervisor_pid: int) -> int:
    """The agent process's main; its exit status."""
    set_title("cluster agent")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        shm = layout.attach_all()
    except Exception as exc:
        logger.error("cluster agent: cannot attach shared memory: %s", exc)
        return 1
    try:
        agent = ClusterAgent(settings, shm, supervisor_pid)
        return loop.run_until_complete(agent.main(loop))
    finally:
        shm.close()
        loop.close()


class ClusterAgent:
    def __init__(self, settings: Settings, shm: ShmSet, supervisor_pid: int) -> None:
        cluster = settings.cluster
        assert cluster.redis is not None
        self.settings = settings
        self.supervisor_pid = supervisor_pid
        self.keys = Keys(cluster.key_prefix)
        self.status = RedisStatus(cluster.redis.redacted, shm.stats, AGENT_INDEX)
        self.bans = ClusterBans(self.keys, cluster.node, settings.limits, shm.addrs, self.status)
        self.registry = NodeRegistry(self.keys, settings, shm.heartbeats)
        self.directory = Directory()
        self.kills = ClusterKills(
            self.keys, cluster.node, shm.cmap, settings.core.run_dir, cluster.timeout
        )
        self.watch = CmapWatch(shm)
        self.usage = ClusterUsage(
            self.keys,
            cluster.node,
            (shm.users, shm.cmap, shm.remote_users),
            self.status,
            (cluster.heartbeat, cluster.node_ttl, cluster.timeout),
        )
        self.conns = ClusterConns(
            self.keys, cluster.node, shm.heartbeats, settings.core.run_dir, cluster.timeout
        )
        self.inbox = ReportInbox(self.status)
        self.client: Redis | None = None
        """The connection of the session in progress, once it is up."""
        self.stop = asyncio.Event()
        self.leave = True
        """At stop: leave the cluster (a stop), or not (a reload's restart, SIGUSR2)."""

    async def main(self, loop: asyncio.AbstractEventLoop) -> int:
        run_dir = self.settings.core.run_dir
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGQUIT, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR2, self._restart)
        loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        await self.inbox.open(agent_report_path(run_dir))
        cluster = self.settings.cluster
        owners = OwnerDesk(self.keys, cluster.node, self.status, cluster.timeout, self._client)
        owners.open(agent_where_path(run_dir))
        ctl = WorkerCtlServer(
            agent_ctl_path(run_dir),
            {
                "cluster.nodes": self.nodes,
                "cluster.kill": self.kill,
                "cluster.sessions": self.sessions,
                "cluster.conns": self.list_conns,
                "log.level": set_log_level,
            },
        )
        await ctl.start()
        logger.info(
            "cluster agent of node %s started, pid %d", self.settings.cluster.node, os.getpid()
        )
        watch = asyncio.ensure_future(self._watch_parent())
        try:
            await self._connect_forever()
        finally:
            watch.cancel()
            await ctl.close()
            await self.kills.close()
            await self.conns.close()
            await owners.close(agent_where_path(run_dir))
            self.inbox.close(agent_report_path(run_dir))
        return 0

    def _client(self) -> Redis | None:
        """The connection of the session in progress (owners.py asks Redis on it)."""
        return self.client

    def _restart(self) -> None:
        self.leave = False
        self.stop.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cluster.heartbeat)
            self.status.publish()
            if os.getppid() != self.supervisor_pid:
                logger.error("cluster agent: the supervisor is gone; leaving")
                self.stop.set()

    # -- sessions with Redis -------------------------------------------------------------

    def _redis(self) -> Redis:
        cluster = self.settings.cluster
        assert cluster.redis is not None
        return Redis.from_url(
            cluster.redis.url,
            socket_timeout=cluster.timeout,
            socket_connect_timeout=cluster.timeout,
            retry=Retry(NoBackoff(), 0),  # the agent's own loop retries, with its backoff
            decode_responses=True,
            encoding_errors="replace",  # a peer's bytes not UTF-8: a bad event, not a crash
            client_name=f"msrpd-{cluster.node}",
        )

    async def _connect_forever(self) -> None:
        wait = RETRY_FIRST
        while not self.stop.is_set():
            client = self._redis()
            try:
                await self._session(client)
            except DOWN as exc:
                self.status.went_down(str(exc) or type(exc).__name__)
                self.usage.went_down()
            finally:
                if self.client is not None:
                    wait = RETRY_FIRST  # it was up: the first retry comes soon
                self.client = None
                with contextlib.suppress(*DOWN):
                    await client.aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), wait)
            wait = min(wait * 2, self.settings.cluster.retry_max)

    async def _session(self, client: Redis) -> None:
        await client.ping()
        pubsub = client.pubsub()
        await pubsub.subscribe(self.keys.events)
        try:
            bans = await self.bans.reload(client)
            if not self.directory.adopted:
                self.directory.adopt(await self._our_entries(client))
            await self._beat(client, full=True)
            self.client = client
            self.status.went_up()
            logger.info(
                "cluster: %d bans loaded, %d sessions in the directory", bans, self.directory.count
            )
            await _first_of(
                self._writes(client), self._events(client, pubsub), self._reports(client)
            )
            if self.stop.is_set() and self.leave:
                await self._leave(client)
        finally:
            with contextlib.suppress(*DOWN):
                await pubsub.reset()

    async def _writes(self, client: Redis) -> None:
        """The registry and usage writes, every heartbeat, until the stop. They end between
        two writes, never inside one: a write cancelled after it was sent still reaches Redis,
        possibly after the leave that follows, and would register the stopped node again."""
        await asyncio.gather(self._beats(client), self.usage.run(client, self.stop))

    async def _beats(self, client: Redis) -> None:
        while not await stopped_within(self.stop, self.settings.cluster.heartbeat):
            await self._beat(client, full=False)

    async def _beat(self, client: Redis, *, full: bool) -> None:
        """The registry entry and the directory's changes, in one round trip."""
        cmap = self.watch.changed(force=full)
        changes = None if cmap is None else self.directory.changes(cmap, time.time(), full=full)
        node = self.settings.cluster.node
        async with client.pipeline(transaction=False) as pipe:
            if changes:
                for token, expires in changes.upserts.items():
                    pipe.set(self.keys.session(token), node, pxat=int(expires * 1000))
                if changes.removals:
                    pipe.delete(*(self.keys.session(token) for token in changes.removals))
            self.registry.write(pipe, self.directory.count if changes is None else changes.live)
            await asyncio.wait_for(pipe.execute(), self.settings.cluster.timeout)
        if changes is not None:
            self.directory.commit(changes)

    async def _events(self, client: Redis, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                self._heard(client, decode_event(message["data"]))
            except DOWN:
                raise
            except Exception as exc:  # a peer's message: never the agent's end
                logger.warning("cluster: ignoring a bad event: %s", exc)
                self.status.add(Counter.cluster_bad_input)

    def _heard(self, client: Redis, event: Event) -> None:
        if isinstance(event, BanEvent):
            self.bans.apply(event.addr, event.until, event.node)
        elif isinstance(event, KillEvent):
            self.kills.heard_kill(client, event)
        elif isinstance(event, KilledEvent):
            self.kills.heard_killed(event)
        elif isinstance(event, ListEvent):
            self.conns.heard_list(client, event)
        else:
            self.conns.heard_listed(event)

    async def _reports(self, client: Redis) -> None:
        timeout = self.settings.cluster.timeout
        while True:
            addr = await self.inbox.next()
            try:
                count = await asyncio.wait_for(self.bans.failed(client, addr), timeout)
            except (*DOWN, asyncio.CancelledError):
                # Counted when Redis is back. Counted twice only when the MULTI ran but its
                # answer was lost: at least once, since one failure too many brings a ban
                # one failure nearer, one too few could hide an attack.
                self.inbox.put_back(addr)
                raise
            except Exception as exc:  # this report only: the next ones still count
                logger.warning("cluster: dropping the report of %r: %s", addr[:80], exc)
                self.status.add(Counter.cluster_bad_input)
                continue
            try:  # counted now: never again, whatever happens to the ban
                await asyncio.wait_for(self.bans.ban_if_due(client, addr, count), timeout)
            except DOWN:
                raise
            except Exception as exc:
                logger.warning("cluster: cannot ban %r: %s", addr[:80], exc)
                self.status.add(Counter.cluster_bad_input)

    async def _our_entries(self, client: Redis) -> list[str]:
        """The directory entries Redis holds for this node (its tokens)."""
        keys = [
            key async for key in client.scan_iter(match=self.keys.session_pattern(), count=1000)
        ]
        node = self.settings.cluster.node
        found: list[str] = []
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            values = await client.mget(batch)
            found.extend(
                self.keys.token(k) for k, v in zip(batch, values, strict=True) if v == node
            )
        return found

    async def _leave(self, client: Redis) -> None:
        """A clean stop: out of the registry at once (while the workers drain, no new session
        should be sent here), and this node's sessions out of the directory."""
        async with client.pipeline(transaction=False) as pipe:
            self.registry.leave(pipe)
            self.usage.leave(pipe)
            tokens = list(self.directory.published)
            if tokens:
                pipe.delete(*(self.keys.session(token) for token in tokens))
            await asyncio.wait_for(pipe.execute(), self.settings.cluster.timeout)
        logger.info("cluster: node %s left the registry", self.settings.cluster.node)

    # -- control -------------------------------------------------------------------------

    async def nodes(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """`msrpd ctl cluster.nodes`: every node, from Redis."""
        return await self._ask_redis(self.registry.listing)

    async def sessions(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """`msrpd ctl msrp.cmaplist cluster`: the other nodes' sessions, from the directory."""
        node = self.settings.cluster.node
        return await self._ask_redis(lambda client: other_sessions(client, self.keys, node))

    async def list_conns(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """`msrpd ctl --cluster msrp.conns`: the other nodes' connections (listconns.py)."""
        return await self._ask_redis(
            lambda client: self.conns.ask(client, self.registry.listing), bound=False
        )

    async def kill(self, params: dict[str, Any]) -> dict[str, Any]:
        """msrp.session_kill of a session this node does not hold (kills.py)."""
        sessid = params.get("sessid")
        if not isinstance(sessid, str):
            raise ValueError("cluster.kill needs a sessid")
        return await self._ask_redis(lambda client: self.kills.ask(client, sessid), bound=False)

    async def _ask_redis(self, step: Callable[[Redis], Awaitable[_T]], *, bound: bool = True) -> _T:
        """`step` on the session's connection, within [cluster] timeout unless it bounds
        itself; Redis down (now or during it) is a ValueError naming the cause."""
        client = self.client
        if client is None:
            raise ValueError(f"Redis at {self.status.url} is unreachable: {self.status.reason}")
        timeout = self.settings.cluster.timeout if bound else None
        try:
            return await asyncio.wait_for(step(client), timeout)
        except DOWN as exc:
            raise ValueError(f"Redis at {self.status.url}: {exc or type(exc).__name__}") from None


async def _first_of(*steps: Awaitable[Any]) -> None:
    """Run `steps` until one ends; cancel the others; raise what the first raised."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
