"""`msrpd ctl --cluster msrp.conns` (issue 17): every node's connections, each listed by its
own agent exactly as its supervisor lists them (control/conns.py).

Rules:
- The asking agent reads the registry for the nodes alive (an entry within node_ttl), then
  publishes a "list" event with a random request id on the events channel every agent hears,
  and gathers the "listed" answers naming it and that id until every live node has answered
  or kill_wait() has passed (the supervisor waits that long for it, plus its margin).
- A node that does not answer in time is one row {"node", "error"}; an answer from a node
  the registry did not name yet is kept. Rows carry the answering node's name ("node"), set
  by the asker from the event.
- An agent answers every "list" but its own, in the background: its workers asked within
  WORKER_TIMEOUT (in a thread: the agent's loop goes on), the answer published within the
  same bound, at most _MAX_ACTING at once (more are not answered, and logged). An answer over
  MAX_LISTED bytes is an error naming the connection count.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..control.conns import Who, node_conns
from ..control.sessions import kill_wait
from ..rundir import AGENT_INDEX, ctl_path
from ..shm import Heartbeats, WorkerState
from .keys import MAX_LISTED, Keys, ListedEvent, ListEvent, encode_event

__all__ = ["ClusterConns"]

logger = logging.getLogger(__name__)

_LISTED = (WorkerState.BOOTING, WorkerState.RUNNING, WorkerState.DRAINING)
_MAX_ACTING = 4
"""Listings answered at once: each asks every worker of the node."""
Registry = Callable[[Redis], Awaitable[list[dict[str, Any]]]]
"""The registry's rows (nodes.NodeRegistry.listing)."""


class _Request:
    __slots__ = ("answers", "done", "expected")

    def __init__(self) -> None:
        self.expected: set[str] | None = None
        """The live nodes but this one, once the registry has been read."""
        self.answers: dict[str, ListedEvent] = {}
        self.done = asyncio.Event()


class ClusterConns:
    def __init__(
        self, keys: Keys, node: str, heartbeats: Heartbeats, run_dir: Path, timeout: float
    ) -> None:
        self.keys = keys
        self.node = node
        self.heartbeats = heartbeats
        self.run_dir = run_dir
        self.wait = kill_wait(timeout)
        self.pending: dict[str, _Request] = {}
        self.acting: set[asyncio.Task[None]] = set()

    async def ask(self, client: Redis, registry: Registry) -> list[dict[str, Any]]:
        """The connections of every other node, node by node, with a row for each live node
        (registry(client): the registry's rows) that did not answer.

        Raises:
            TimeoutError, RedisError, OSError: Redis did not answer, or failed.
        """
        request_id = secrets.token_hex(8)
        request = _Request()
        self.pending[request_id] = request
        sent = False
        try:
            async with asyncio.timeout(self.wait):
                rows = await registry(client)
                live = {str(row["node"]) for row in rows if row.get("health") != "lost"}
                request.expected = live - {self.node}
                await client.publish(
                    self.keys.events, encode_event(ListEvent(self.node, request_id))
                )
                sent = True
                if request.expected:
                    await request.done.wait()
        except TimeoutError:
            if not sent:
                raise  # Redis did not answer in time
        finally:
            del self.pending[request_id]
        return self._rows(request)

    def _rows(self, request: _Request) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for node in sorted((request.expected or set()) | set(request.answers)):
            answer = request.answers.get(node)
            if answer is None:
                rows.append({"node": node, "error": f"no answer within {self.wait:g} s"})
            elif answer.rows is None:
                rows.append({"node": node, "error": answer.error})
            else:
                rows.extend({**row, "node": node} for row in answer.rows)
        return rows

    def heard_list(self, client: Redis, event: ListEvent) -> None:
        if event.node == self.node:
            return
        if len(self.acting) >= _MAX_ACTING:  # a flood of requests: the asker names us silent
            logger.warning("cluster: not answering node %s's listing: too many at once", event.node)
            return
        task = asyncio.ensure_future(self._answer(client, event))
        self.acting.add(task)
        task.add_done_callback(self.acting.discard)

    def heard_listed(self, event: ListedEvent) -> None:
        request = self.pending.get(event.id)
        if request is None or event.to != self.node:
            return
        request.answers[event.node] = event
        if request.expected is not None and request.expected <= set(request.answers):
            request.done.set()

    async def _answer(self, client: Redis, event: ListEvent) -> None:
        rows: list[dict[str, object]] | None = None
        error: str | None = None
        try:
            rows = await asyncio.to_thread(node_conns, self._workers())
        except Exception as exc:  # the asker hears why, rather than a silence
            logger.warning("cluster: listing this node's connections failed: %s", exc)
            error = f"listing failed: {exc}"
        text = encode_event(ListedEvent(self.node, event.node, event.id, rows, error))
        if rows is not None and len(text.encode()) > MAX_LISTED:
            error = f"{len(rows)} connections: an answer over {MAX_LISTED} bytes"
            text = encode_event(ListedEvent(self.node, event.node, event.id, None, error))
        try:
            await asyncio.wait_for(client.publish(self.keys.events, text), self.wait)
        except (OSError, TimeoutError, RedisError) as exc:
            logger.warning("cluster: cannot answer node %s's listing: %s", event.node, exc)

    def _workers(self) -> list[tuple[Who, Path]]:
        return [
            (
                {"slot": r.slot, "generation": r.generation, "pid": r.pid},
                ctl_path(self.run_dir, r.slot, r.generation),
            )
            for r in self.heartbeats.live()
            if r.index != AGENT_INDEX and r.state in _LISTED
        ]

    async def close(self) -> None:
        """At the agent's stop: the answers still running are cancelled."""
        for task in self.acting:
            task.cancel()
        await asyncio.gather(*self.acting, return_exceptions=True)
