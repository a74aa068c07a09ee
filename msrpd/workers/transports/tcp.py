"""TcpWire: MSRP over plain TCP (RFC 4975 §6): the bytes on the wire are the MSRP bytes."""

from __future__ import annotations

import asyncio
from typing import cast

from ..peers import format_peer
from .base import ChunkIds, Receive, Wire

__all__ = ["TcpWire"]


class TcpWire(Wire):
    __slots__ = ()

    def __init__(
        self, local_sock: str = "", scheme: str = "msrp", kind: str = "tcp", movable: bool = True
    ) -> None:
        super().__init__(local_sock, scheme, kind, movable)

    def attach(
        self, transport: asyncio.BaseTransport, feed: Receive, high: int, chunk_ids: ChunkIds
    ) -> str:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = t = cast(asyncio.Transport, transport)
        t.set_write_buffer_limits(high=high)
        self.receive, self.send = feed, t.write
        self.direct = True
        self.send_all = t.writelines  # uvloop's: one writev of the pieces, none copied
        host, port = t.get_extra_info("peername")[:2]
        return format_peer(host, port)

    def self_uri(self) -> bytes:
        """This relay's URI as the peer reached it (the listening socket), b"" when outbound;
        its transport parameter is "tcp" over TLS too (RFC 4975 §9)."""
        if not self.local_sock:
            return b""
        address = self.local_sock.partition(":")[2]
        return f"{self.scheme}://{address};tcp".encode()
