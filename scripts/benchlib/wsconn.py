"""A WebSocket Alice for the generator (--alice-ws): Conn over a ws: listener (RFC 7977).

The upgrade asks for the `msrp` subprotocol; then every MSRP frame written goes out as one
masked binary message (wsproto, the client side), and each message read is handed on as the
bytes a TCP Conn would have read. The generator's frames all end with `$\\r\\n` and hold it
nowhere else (fixed text bodies, bodiless responses), which is where a write is split.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Message, Request

from .msrp import Conn


class _Writer:
    """What Pair and Conn.request call `transport`: write() frames MSRP bytes."""

    __slots__ = ("transport", "ws")

    def __init__(self, transport: asyncio.Transport, ws: WSConnection) -> None:
        self.transport = transport
        self.ws = ws

    def write(self, data: bytes) -> None:
        send, frames = self.ws.send, data.split(b"$\r\n")
        self.transport.write(b"".join(send(BytesMessage(data=f + b"$\r\n")) for f in frames[:-1]))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def close(self) -> None:
        self.transport.close()


class WsConn(Conn):
    def __init__(self) -> None:
        super().__init__()
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.raw = transport
        transport.write(self.ws.send(Request(host="127.0.0.1", target="/", subprotocols=["msrp"])))

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.transport = _Writer(self.raw, self.ws)  # type: ignore[assignment]
                self.upgraded.set_result(None)
            elif isinstance(event, Message):
                super().data_received(bytes(event.data))
            elif not self.upgraded.done():
                self.upgraded.set_exception(RuntimeError(f"upgrade refused: {event!r}"))

    def local_uri(self, tag: str) -> bytes:
        port = self.raw.get_extra_info("sockname")[1]
        return f"msrp://p{port}.invalid:2855/{tag}{port};ws".encode()


async def connect_ws(port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(WsConn, "127.0.0.1", port)
    await asyncio.wait_for(conn.upgraded, 10)
    return conn
