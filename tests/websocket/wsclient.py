"""A blocking MSRP client over WebSocket for tests: the `websockets` library's client
protocol (an independent implementation, client side only; wsconn.py drives it in the test's
thread) carries what MsrpClient builds and reads.

Every message the relay sends must hold exactly one MSRP frame (RFC 7977 §5.1): recv checks
it, and keeps each message's type and size in `messages`.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time

from websockets.exceptions import ConnectionClosed

from msrpd.protocol import BodyPiece, Frame, FrameEnd

from ..msrpclient import MsrpClient, Received
from .wsconn import WsConnection


class WsMsrpClient(MsrpClient):
    def __init__(
        self,
        port: int,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        text: bool = False,
        origin: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        """Open ws[s]://127.0.0.1:port/ with the msrp subprotocol; `text`: send text messages;
        `sock`: over that socket, connected to the port (its buffers set by the test).
        Nothing is read but what recv asks for (wsconn.py)."""
        scheme = "wss" if tls else "ws"
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock.settimeout(timeout)
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        try:
            self.ws = WsConnection(sock, f"{scheme}://127.0.0.1:{port}/", "msrp", origin, timeout)
        except BaseException:
            sock.close()
            raise
        super().__init__(port, sock=sock, tls=tls, timeout=timeout)
        self.text = text
        # A browser has no address to give: a .invalid host (RFC 7977 §5.2).
        host = f"{secrets.token_hex(6)}.invalid"
        self.uri = f"{self.scheme}://{host}:2855/c{secrets.token_hex(4)};ws"
        self.relay_uri = f"{self.scheme}://127.0.0.1:{port};ws"
        self.messages: list[tuple[str, int]] = []

    def close(self) -> None:
        self.ws.close()

    def send_raw(self, data: bytes) -> None:
        self.ws.send(data.decode() if self.text else data)
        self.bytes_sent += len(data)

    def recv(self, timeout: float | None = None) -> Received:
        """The next frame: one whole message (RFC 7977 §5.1); raises TimeoutError, or
        EOFError when the relay closed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        left = deadline - time.monotonic()
        try:
            message = self.ws.recv(max(left, 0.001))
        except TimeoutError:
            raise TimeoutError("no frame from the relay") from None
        except ConnectionClosed as exc:
            raise EOFError(f"the relay closed the connection: {exc!r}") from None
        data = message.encode() if isinstance(message, str) else message
        self.messages.append(("text" if isinstance(message, str) else "binary", len(data)))
        self.bytes_received += len(data)
        self.reader.receive_data(data)
        events = list(self.reader.events())
        body = bytearray()
        head: Frame | None = None
        received = None
        for event in events:
            if isinstance(event, Frame):
                assert received is None and head is None, "two frames in one message"
                if event.streamed:
                    head = event
                else:
                    received = Received(event, bytes(event.body or b""))
            elif isinstance(event, BodyPiece):
                body += event.data
            elif isinstance(event, FrameEnd):
                assert head is not None
                received = Received(head, bytes(body))
        assert received is not None, "a message without a whole frame"
        return received
