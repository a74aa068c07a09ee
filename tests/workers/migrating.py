"""Real TCP connections for the migration tests: accepted asyncio transports (what a worker
moves or passes) and the client sockets at their other ends."""

from __future__ import annotations

import asyncio
import socket


class Accepted(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.Transport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transports.append(transport)


class Net:
    """Accepted TCP connections (the relay's transports) and their clients."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transports: list[asyncio.Transport] = []
        self.clients: list[socket.socket] = []
        self.server = loop.run_until_complete(
            loop.create_server(lambda: Accepted(self.transports), "127.0.0.1", 0)
        )

    def connect(self) -> tuple[asyncio.Transport, socket.socket]:
        port = self.server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.settimeout(5)
        self.clients.append(client)
        count = len(self.transports)
        while len(self.transports) == count:
            self.loop.run_until_complete(asyncio.sleep(0.01))
        return self.transports[-1], client

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()
        for client in self.clients:
            client.close()
        self.server.close()
        self.loop.run_until_complete(asyncio.sleep(0))
