"""msrp.session_kill over the cluster (issue 17): a session held on another node is ended
there, by its own agent, exactly as a local kill (control/sessions.py).

Rules:
- The asking agent reads the owner from the directory (sess:<token>). No entry, or one naming
  this node (whose supervisor just found no such session here): not found, no message sent.
- Otherwise it publishes a "kill" event naming the owner, the session and a random request
  id, and waits for the owner's "killed" answer on the same channel, which every agent already
  hears: no extra connection, no key to clean up, and nothing written when the owner is gone.
  The whole exchange is bounded by control/sessions.kill_wait(); past it, or with Redis down,
  the answer is an error that says which.
- An agent acts only on a kill naming it, and the kill then does only what
  `msrpd ctl msrp.session_kill` on that node would do (nothing when its cmap holds no such
  session): a forged event is as powerful as an operator's ctl call, hence Redis stays private.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..control.sessions import kill_session, kill_wait
from ..rundir import ctl_path
from ..shm import Cmap
from .keys import Keys, KilledEvent, KillEvent, encode_event

__all__ = ["ClusterKills"]

logger = logging.getLogger(__name__)


class ClusterKills:
    def __init__(self, keys: Keys, node: str, cmap: Cmap, run_dir: Path, timeout: float) -> None:
        self.keys = keys
        self.node = node
        self.cmap = cmap
        self.run_dir = run_dir
        self.wait = kill_wait(timeout)
        self.pending: dict[str, tuple[str, asyncio.Future[KilledEvent]]] = {}
        """Request id -> (the owner, its answer), while this agent waits for it."""
        self.acting: set[asyncio.Task[None]] = set()

    async def ask(self, client: Redis, sessid: str) -> dict[str, Any]:
        """Kill `sessid` on the node holding it: {"killed", "node", "conid", "closed"}, or
        {"killed": False, "node": None} when no other node holds it.

        Raises:
            ValueError: the owner did not answer within self.wait.
            TimeoutError, RedisError, OSError: Redis did not answer, or failed.
        """
        owner: str | None = None
        try:
            async with asyncio.timeout(self.wait):
                found = await client.get(self.keys.session(sessid))
                owner = None if found is None else str(found)
                if owner is None or owner == self.node:
                    return {"killed": False, "node": None}
                done = await self._exchange(client, KillEvent(self.node, owner, sessid, ""))
        except TimeoutError:
            if owner is None:
                raise
            raise ValueError(
                f"node {owner} did not answer the kill of {sessid} within {self.wait:g} s"
            ) from None
        logger.info("cluster: session %s killed on node %s: %s", sessid, owner, done.killed)
        return {"killed": done.killed, "node": owner, "conid": done.conid, "closed": done.closed}

    async def _exchange(self, client: Redis, kill: KillEvent) -> KilledEvent:
        request = secrets.token_hex(8)
        answer: asyncio.Future[KilledEvent] = asyncio.get_running_loop().create_future()
        self.pending[request] = (kill.target, answer)
        try:
            kill = KillEvent(kill.node, kill.target, kill.sessid, request)
            await client.publish(self.keys.events, encode_event(kill))
            return await answer
        finally:
            del self.pending[request]

    def heard_kill(self, client: Redis, event: KillEvent) -> None:
        """A kill on the events channel: acted on (in the background) when it names us."""
        if event.target != self.node:
            return
        task = asyncio.ensure_future(self._act(client, event))
        self.acting.add(task)
        task.add_done_callback(self.acting.discard)

    async def _act(self, client: Redis, event: KillEvent) -> None:
        logger.info("cluster: node %s asks to kill session %s", event.node, event.sessid)
        run_dir = self.run_dir
        done = await asyncio.to_thread(
            kill_session, self.cmap, event.sessid, lambda slot, gen: ctl_path(run_dir, slot, gen)
        )
        answer = KilledEvent(
            self.node, event.node, event.id, done["killed"], done.get("conid"), done.get("closed")
        )
        try:
            publish = client.publish(self.keys.events, encode_event(answer))
            await asyncio.wait_for(publish, self.wait)
        except (OSError, TimeoutError, RedisError) as exc:
            logger.warning("cluster: cannot answer node %s's kill: %s", event.node, exc)

    async def close(self) -> None:
        """At the agent's stop: the kills still running are cancelled (their askers time
        out, as when this node is gone)."""
        for task in self.acting:
            task.cancel()
        await asyncio.gather(*self.acting, return_exceptions=True)

    def heard_killed(self, event: KilledEvent) -> None:
        """An answer on the events channel: given to the request waiting for it, if any."""
        owner, answer = self.pending.get(event.id, ("", None))
        ours = (event.to, event.node) == (self.node, owner)
        if answer is not None and ours and not answer.done():
            answer.set_result(event)
