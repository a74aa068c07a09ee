"""Descriptors over a Unix datagram socket (SCM_RIGHTS): the only place sockets change hands
between workers (DESIGN §2: fd passing where it helps)."""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MAX_FDS", "MAX_MESSAGE", "FdSender", "receive"]

logger = logging.getLogger(__name__)

MAX_FDS = 64
"""Descriptors in one datagram (a retiring worker's batch, wire.py)."""
MAX_MESSAGE = 1 << 17
"""Bytes of one datagram the receiver reads."""


class FdSender:
    """One unbound datagram socket that sends descriptors to any worker's accept socket."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, transports: Sequence[asyncio.Transport], path: Path, message: bytes) -> bool:
        """Send the transports' sockets, in order, with `message` in one datagram to the
        socket bound at `path`; False (and nothing sent) when that fails (peer gone, queue
        full). The receiver holds its own copies: ours stay open until the caller closes."""
        fds: list[int] = []
        try:
            for transport in transports:
                sock = transport.get_extra_info("socket")
                if sock is None:
                    return False
                fds.append(os.dup(sock.fileno()))
            # sendmsg, not socket.send_fds: send_fds drops its address argument (Python 3.11).
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))
            self._sock.sendmsg([message], [rights], 0, str(path))
        except OSError as exc:
            logger.debug("cannot pass connections to %s: %s; keeping them", path, exc)
            return False
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def close(self) -> None:
        self._sock.close()


def receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """One datagram and the descriptors it carried; None when none is queued.

    Raises:
        OSError: the socket failed.
    """
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    except BlockingIOError:
        return None
    return data, fds
