"""A worker's accept socket (accept-<slot>-<generation>.sock): connections other workers pass
or move here arrive on it (fdpass.py), and what each is says wire.py.

Every descriptor received is served or closed, never left open unowned: a message that does
not parse, or a descriptor that is no TCP socket, closes what came with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from ...shm import Counter, StatsCounters
from .fdpass import receive
from .wire import Moved, Passed, WireError, decode

__all__ = ["AcceptInbox"]

logger = logging.getLogger(__name__)


class AcceptInbox:
    """The receiving end of fd passing.

    Args:
        path: where to listen.
        adopt: `adopt(sock, listen_text)` for a connection another worker accepted (PASSED).
        adopt_moved: `adopt_moved(sock, move_message)` for one it moved here (MOVED).
        counters: this worker's counters (conns_adopted).
        loop: the running loop.
    """

    def __init__(
        self,
        path: Path,
        adopt: Callable[[socket.socket, str], None],
        adopt_moved: Callable[[socket.socket, bytes], None],
        counters: StatsCounters,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.path = path
        self.adopt = adopt
        self.adopt_moved = adopt_moved
        self.counters = counters
        self.loop = loop
        self._sock: socket.socket | None = None
        self._shut = False

    def start(self) -> None:
        """Listen (mode 0600, a stale socket file replaced)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.loop.add_reader(sock.fileno(), self.receive)

    def shut(self) -> bool:
        """Take no more connections (a retiring worker about to exit): remove the socket's
        path, so a sender now fails and keeps its connection, then serve what was queued
        before. True when that was anything: the worker has connections again."""
        if self._sock is None:
            return False
        if not self._shut:
            self._shut = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        return self.receive() > 0

    def close(self) -> None:
        """Stop receiving; connections still queued on the socket are closed by the kernel
        (only RUNNING workers are sent any, and a worker drains before it exits)."""
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if not self._shut:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)

    def receive(self) -> int:
        """Serve every connection queued on the socket; how many there were."""
        sock, taken = self._sock, 0
        while sock is not None:
            try:
                got = receive(sock)
            except OSError as exc:
                logger.warning("accept socket: %s", exc)
                return taken
            if got is None:
                return taken
            data, fds = got
            taken += len(fds)
            if not fds:
                logger.warning("accept socket: a message without a connection; ignored")
                continue
            try:
                items = decode(data, len(fds))
            except WireError as exc:
                logger.warning("cannot take the connections another worker passed (%s)", exc)
                for fd in fds:
                    os.close(fd)
                continue
            for fd, item in zip(fds, items, strict=True):
                self._take(fd, item)
        return taken

    def _take(self, fd: int, item: Passed | Moved) -> None:
        try:
            conn = socket.socket(fileno=fd)
        except OSError as exc:
            logger.warning("accept socket: a passed descriptor is no socket (%s); closed", exc)
            os.close(fd)
            return
        try:
            if conn.family not in (socket.AF_INET, socket.AF_INET6) or (
                conn.type != socket.SOCK_STREAM
            ):
                raise ValueError(f"not a TCP socket: {conn.family!r}, {conn.type!r}")
            if isinstance(item, Passed):
                self.counters.add(Counter.conns_adopted)
                self.adopt(conn, item.listen)
            else:
                self.adopt_moved(conn, item.message)
        except Exception as exc:
            logger.warning("cannot take a connection another worker passed (%s); closed", exc)
            conn.close()
