"""The agent's side of where.py: which other node holds a token, for the node's workers
(finder.py), read from Redis: the directory entry `sess:<token>` names the node, the registry
entry `node:<name>` gives its Use-Path address.

Rules:
- One datagram socket, run_dir/cluster-where.sock (mode 0600, like the workers' sockets: only
  this user's processes may ask); a question is answered to the address it came from, so a
  worker binds one (an abstract address) and connects its socket to this one.
- `none` when the directory has no entry, names this node, or names a node with no registry
  entry (lost: its entry expired after node_ttl) or no address; `found` with the address
  otherwise. The address comes from the registry only, never from a frame: a node forwards
  only to nodes of the cluster (no open relay).
- `down` at once while Redis is down, and when the reads fail or take longer than [cluster]
  timeout; at most MAX_ASKING questions are read at a time, the others are answered `down`
  at once (a worker asks at most finder.MAX_IN_FLIGHT at a time; this bounds a flood from
  elsewhere). A question that is not one is dropped and counted (cluster_bad_input).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..shm import Counter
from .keys import Keys
from .status import RedisStatus
from .where import DOWN, FOUND, NONE, Answer, decode_ask, encode_answer

__all__ = ["MAX_ASKING", "OwnerDesk"]

logger = logging.getLogger(__name__)

MAX_ASKING: Final = 256
_RECV_MAX: Final = 512


class OwnerDesk:
    def __init__(
        self,
        keys: Keys,
        node: str,
        status: RedisStatus,
        timeout: float,
        client: Callable[[], Redis | None],
    ) -> None:
        self.keys = keys
        self.node = node
        self.status = status
        self.timeout = timeout
        self.client = client
        """The Redis connection of the agent's session in progress, None while Redis is down."""
        self.sock: socket.socket | None = None
        self.asking: set[asyncio.Task[None]] = set()

    def open(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    async def close(self, path: Path) -> None:
        for task in list(self.asking):
            task.cancel()
        await asyncio.gather(*self.asking, return_exceptions=True)
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def _readable(self) -> None:
        sock = self.sock
        while sock is not None:
            try:
                data, sender = sock.recvfrom(_RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("cluster: reading a where-is question failed: %s", exc)
                return
            self._asked(data, sender)

    def _asked(self, data: bytes, sender: object) -> None:
        try:
            id_, token = decode_ask(data)
        except ValueError as exc:
            logger.warning("cluster: ignoring %s", exc)
            self.status.add(Counter.cluster_bad_input)
            return
        if not isinstance(sender, (str, bytes)) or not sender:
            return  # an unbound sender cannot be answered
        client = self.client()
        if client is None or len(self.asking) >= MAX_ASKING:
            self._answer(sender, Answer(id_, token, DOWN))
            return
        task = asyncio.get_running_loop().create_task(self._look(client, sender, id_, token))
        self.asking.add(task)
        task.add_done_callback(self.asking.discard)

    async def _look(self, client: Redis, sender: str | bytes, id_: str, token: str) -> None:
        try:
            answer = await asyncio.wait_for(self._owner(client, id_, token), self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("cluster: where is %s: Redis did not answer (%s)", token[:8], exc)
            answer = Answer(id_, token, DOWN)
        self._answer(sender, answer)

    async def _owner(self, client: Redis, id_: str, token: str) -> Answer:
        name = await client.get(self.keys.session(token))
        if not isinstance(name, str) or name == self.node:
            return Answer(id_, token, NONE)
        addr = await client.hget(self.keys.node(name), "addr")
        if not isinstance(addr, str) or not addr:
            return Answer(id_, token, NONE)  # lost (its entry expired) or no address
        return Answer(id_, token, FOUND, addr)

    def _answer(self, sender: str | bytes, answer: Answer) -> None:
        if self.sock is None:
            return
        try:
            data = encode_answer(answer)
        except UnicodeEncodeError:  # an address that is not ASCII: not a node's
            data = encode_answer(Answer(answer.id, answer.token, NONE))
        try:
            self.sock.sendto(data, sender)
        except OSError as exc:  # the worker is gone, or its queue is full: it times out
            logger.debug("cluster: where-is answer to %r lost: %s", sender, exc)
