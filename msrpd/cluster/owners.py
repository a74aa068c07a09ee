"""The agent's side of where.py: which other node holds a token, for the node's workers
(finder.py), read from Redis: the directory entry `sess:<token>` names the node, the registry
entry `node:<name>` gives its Use-Path address.

Rules:
- One SOCK_SEQPACKET socket, run_dir/cluster-where.sock (mode 0600, like the workers'
  sockets: only this user's processes may ask); each worker connects once and asks on its
  connection, where its answers come.
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
from collections.abc import Callable
from pathlib import Path
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..shm import Counter
from .keys import Keys
from .status import RedisStatus
from .unixsock import bound
from .where import DOWN, FOUND, NONE, Answer, decode_ask, encode_answer, valid_addr

__all__ = ["MAX_ASKING", "OwnerDesk"]

logger = logging.getLogger(__name__)

MAX_ASKING: Final = 256
_RECV_MAX: Final = 512
_BACKLOG: Final = 128


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
        """The listening socket."""
        self.workers: set[socket.socket] = set()
        """A connection per worker that asked."""
        self.asking: set[asyncio.Task[None]] = set()

    def open(self, path: Path) -> None:
        sock = bound(socket.SOCK_SEQPACKET, path)
        try:
            sock.listen(_BACKLOG)
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    async def close(self, path: Path) -> None:
        for task in list(self.asking):
            task.cancel()
        await asyncio.gather(*self.asking, return_exceptions=True)
        loop = asyncio.get_running_loop()
        for conn in [*self.workers, *([self.sock] if self.sock is not None else [])]:
            loop.remove_reader(conn.fileno())
            conn.close()
        self.workers.clear()
        self.sock = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def _accept(self) -> None:
        """A worker connects (its first question after it started, or after a restart)."""
        if self.sock is None:
            return
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            logger.warning("cluster: accepting a worker's where-is connection failed: %s", exc)
            return
        conn.setblocking(False)
        self.workers.add(conn)
        asyncio.get_running_loop().add_reader(conn.fileno(), self._readable, conn)

    def _readable(self, conn: socket.socket) -> None:
        while conn in self.workers:
            try:
                data = conn.recv(_RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:  # the worker exited
                asyncio.get_running_loop().remove_reader(conn.fileno())
                self.workers.discard(conn)
                conn.close()
                return
            self._asked(data, conn)

    def _asked(self, data: bytes, sender: socket.socket) -> None:
        try:
            id_, token = decode_ask(data)
        except ValueError as exc:
            logger.warning("cluster: ignoring %s", exc)
            self.status.add(Counter.cluster_bad_input)
            return
        client = self.client()
        if client is None or len(self.asking) >= MAX_ASKING:
            self._answer(sender, Answer(id_, token, DOWN))
            return
        task = asyncio.get_running_loop().create_task(self._look(client, sender, id_, token))
        self.asking.add(task)
        task.add_done_callback(self.asking.discard)

    async def _look(self, client: Redis, sender: socket.socket, id_: str, token: str) -> None:
        try:
            answer = await asyncio.wait_for(self._owner(client, id_, token), self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("cluster: a token lookup in Redis failed: %s", exc or type(exc).__name__)
            answer = Answer(id_, token, DOWN)
        self._answer(sender, answer)

    async def _owner(self, client: Redis, id_: str, token: str) -> Answer:
        name = await client.get(self.keys.session(token))
        if not isinstance(name, str) or name == self.node:
            return Answer(id_, token, NONE)
        addr = await client.hget(self.keys.node(name), "addr")
        if not isinstance(addr, str) or not addr:
            return Answer(id_, token, NONE)  # lost (its entry expired) or no address
        if not valid_addr(addr):
            logger.warning("cluster: node %s's address %r is no host:port", name[:64], addr[:80])
            return Answer(id_, token, NONE)
        return Answer(id_, token, FOUND, addr)

    def _answer(self, sender: socket.socket, answer: Answer) -> None:
        if sender not in self.workers:
            return  # the worker went meanwhile
        try:
            sender.send(encode_answer(answer))
        except OSError as exc:  # the worker stopped reading: its lookup times out
            logger.debug("cluster: a where-is answer is lost: %s", exc)
