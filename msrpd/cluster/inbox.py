"""The agent's side of cluster/report.py: the workers' failed-AUTH reports, one address per
datagram on run_dir/cluster-report.sock (mode 0600, like the workers' sockets: only this
user's processes may report).

Rules: a report waits in a bounded queue while Redis is slow or down; beyond MAX_WAITING the
newest are dropped and counted (cluster_reports_dropped): the failures still count on the
node that saw them (shm/addrs.py). A datagram that is not an IP address (as
workers/peers.py source_host() writes it) is refused and counted (cluster_bad_input): it could
not be a worker's, and must not reach Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections import deque
from pathlib import Path
from typing import Final

from ..shm import ADDR_KEY_MAX, Counter
from .status import RedisStatus
from .unixsock import bound

__all__ = ["MAX_WAITING", "ReportInbox"]

logger = logging.getLogger(__name__)

MAX_WAITING: Final = 4096


class ReportInbox(asyncio.DatagramProtocol):
    def __init__(self, status: RedisStatus) -> None:
        self.status = status
        self.waiting: deque[str] = deque()
        self.ready = asyncio.Event()
        self.transport: asyncio.BaseTransport | None = None

    async def open(self, path: Path) -> None:
        sock = bound(socket.SOCK_DGRAM, path)
        try:
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            self.transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise

    def close(self, path: Path) -> None:
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not data or len(data) > ADDR_KEY_MAX:
            logger.warning("cluster: ignoring a report of %d bytes", len(data))
            return
        try:
            addr = data.decode("ascii")
            # As workers/peers.py source_host() gives it (the ban table's key): "[::1]" for IPv6.
            ipaddress.ip_address(addr[1:-1] if addr.startswith("[") else addr)
        except ValueError:  # UnicodeDecodeError too: a worker reports a peer's IP address
            logger.warning("cluster: ignoring a report that is no address: %r", data[:80])
            self.status.add(Counter.cluster_bad_input)
            return
        if len(self.waiting) >= MAX_WAITING:
            self.status.add(Counter.cluster_reports_dropped)
            return
        self.waiting.append(addr)
        self.ready.set()

    def put_back(self, addr: str) -> None:
        """`addr`, taken by next(), not counted yet: first again (Redis went down)."""
        self.waiting.appendleft(addr)
        self.ready.set()

    async def next(self) -> str:
        """The oldest report waiting (waits for one)."""
        while not self.waiting:
            self.ready.clear()
            await self.ready.wait()
        return self.waiting.popleft()
