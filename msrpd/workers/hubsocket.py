"""HubSocket: the Unix socket a worker's hub listens on for the links of the other workers.

Rules: the path names the worker among its peers, so
- a stale socket file on the path (left by a crashed worker) is replaced, anything else there
  is an error;
- the socket is mode 0600 before listen(), so there is no window with wider modes;
- at close the file is removed only while it is still ours: a successor may have bound the
  same path meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["HubSocket"]


class HubSocket:
    """The listening socket at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def listen(
        self, loop: asyncio.AbstractEventLoop, protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            self._inode = os.stat(self.path).st_ino
            sock.setblocking(False)
            self._server = await loop.create_unix_server(protocol, sock=sock)
        except BaseException:
            sock.close()
            raise

    def stop(self) -> None:
        """Accept no more links."""
        if self._server is not None:
            self._server.close()

    async def remove(self) -> None:
        """After `stop`: wait for the server to close, then remove the file if it is ours."""
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
