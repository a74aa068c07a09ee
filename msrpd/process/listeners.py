"""Listening sockets: one SO_REUSEPORT socket per worker slot for every listen entry.

Rules (style rule 13, nginx ngx_clone_listening): the supervisor binds every socket before
forking; slot i's worker, and any replacement or next-generation worker of slot i, accepts on
socket i. The kernel spreads new connections over the slots' sockets, and a socket whose
worker is being replaced keeps queueing connections for the replacement: none is refused.
The backlog is `[core] backlog`, capped at net.core.somaxconn, given both here and to the
worker's create_server (which calls listen() again, with asyncio's 100 unless told).

SO_REUSEPORT lets any process of the same user bind a port already listened on, and the
kernel then splits new connections between both: a second relay started on our port (or
ours on another's) would silently take part of the other's clients. So a port this set holds
no socket on yet is first bound once without SO_REUSEPORT: a listener there, whoever's, makes
that fail as a plain bind would (EADDRINUSE). A port it holds already is not probed (a reload
may give it another protocol or address): another program on it then goes unnoticed.
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

from ..config import ListenAddress

__all__ = ["ListenerSet", "bind_listener", "check_unclaimed", "listen_backlog"]

logger = logging.getLogger(__name__)

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def listen_backlog(wanted: int, somaxconn: Path = SOMAXCONN) -> int:
    """`wanted`, or net.core.somaxconn when that is lower: the kernel would cap it silently,
    so say so. Unreadable (not Linux): `wanted`."""
    try:
        cap = int(somaxconn.read_text())
    except (OSError, ValueError):
        return wanted
    if 0 < cap < wanted:
        logger.warning("listen backlog %d capped at net.core.somaxconn = %d", wanted, cap)
        return cap
    return wanted


def bind_listener(addr: ListenAddress, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking SO_REUSEPORT socket for `addr`.

    Raises:
        OSError: the address cannot be bound (in use by another program, not local, ...).
    """
    sock = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def check_unclaimed(addr: ListenAddress) -> None:
    """Raise OSError (EADDRINUSE) when something listens on `addr` already: a bind without
    SO_REUSEPORT conflicts with any listener (SO_REUSEADDR only skips TIME_WAIT sockets)."""
    if addr.port == 0:
        return  # the kernel picks a free port per socket
    with socket.socket(addr.family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((addr.host, addr.port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OSError(exc.errno, "in use by another program (another relay?)") from None


class ListenerSet:
    """The supervisor's sockets, keyed by (listen entry, slot)."""

    def __init__(self) -> None:
        self.sockets: dict[tuple[ListenAddress, int], socket.socket] = {}

    def ensure(self, listen: tuple[ListenAddress, ...], children: int, backlog: int) -> None:
        """Bind whatever `listen` x `children` needs that is not bound yet; on failure,
        close what this call bound and raise OSError naming the address."""
        added: list[tuple[ListenAddress, int]] = []
        # A port this relay listens on already, under any entry (a reload may move it to
        # another protocol, or narrow a wildcard to one address): bound again with
        # SO_REUSEPORT beside our own socket until prune closes that, never probed (the probe
        # would meet our own listener).
        ours = {(addr.family, addr.port) for addr, _ in self.sockets}
        try:
            for addr in listen:
                if (addr.family, addr.port) not in ours:
                    check_unclaimed(addr)
                for slot in range(children):
                    if (addr, slot) not in self.sockets:
                        self.sockets[addr, slot] = bind_listener(addr, backlog)
                        added.append((addr, slot))
        except OSError as exc:
            for key in added:
                self.sockets.pop(key).close()
            raise OSError(exc.errno, f"cannot listen on {addr}: {exc.strerror}") from None

    def for_slot(
        self, listen: tuple[ListenAddress, ...], slot: int
    ) -> tuple[tuple[socket.socket, ListenAddress], ...]:
        return tuple((self.sockets[addr, slot], addr) for addr in listen)

    def prune(self, listen: tuple[ListenAddress, ...], children: int) -> None:
        """Close the sockets the current config no longer uses."""
        for addr, slot in list(self.sockets):
            if addr not in listen or slot >= children:
                self.sockets.pop((addr, slot)).close()

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
