"""A TCP connection to a next hop, made before any protocol is attached to it.

The dialler bounds the connect by `connect_timeout`. Were the protocol attached inside that
bound (loop.create_connection(host, port)), the deadline could fire after its
connection_made, which flushes the frames parked on it: the connect would count as failed
and its frames be reported lost while they were on their way, and its socket be left open.
So the bound covers only the name lookup and the connect; the protocol is attached after
it, to a socket that is already connected.
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["connect_socket"]


async def connect_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected, non-blocking socket to `host`:`port`: its addresses tried in the order
    the resolver gives them, as loop.create_connection does. Raises the last address's
    error (OSError) when none takes the connection; a socket not returned is closed."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {host}")
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            # As create_connection(host, port) sets it (with sock= only uvloop does): a
            # relay's frames go out when written.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # the deadline (cancelled), a stop: nothing is left open
            sock.close()
            raise
        return sock
    assert error is not None
    raise error
