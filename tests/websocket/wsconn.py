"""A WebSocket client connection driven in the caller's thread, for tests: the `websockets`
library's sans-IO client protocol (an independent implementation of RFC 6455) over a
blocking socket.

Why not the library's threaded client (websockets.sync): it reads in a background thread
while the test writes in its own, and Python's SSL sockets are not safe to read and write at
once. A request written while the reader handles the server's TLS 1.3 session tickets was
lost now and then: the relay, TLS done, waited for the upgrade request until
upgrade_timeout and closed, and the client saw the connection end before any response (a
CI failure, reproduced about once in 300 fresh wss connections under load). Here nothing
reads unless the test asks for a message, so nothing reads while it writes; pings are
answered when the test reads, as a browser's would be while its page script runs.
"""

from __future__ import annotations

import socket
import time
from collections import deque

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol
from websockets.uri import parse_uri

__all__ = ["WsConnection"]

READ = 1 << 20


class WsConnection:
    def __init__(
        self, sock: socket.socket, uri: str, subprotocol: str, origin: str | None, timeout: float
    ) -> None:
        """Open the WebSocket over connected `sock` (TLS done already, for wss).

        Raises:
            InvalidHandshake: the relay refused the upgrade (InvalidStatus: its status),
                or closed before answering it.
            TimeoutError: no answer within `timeout` seconds.
        """
        self.socket = sock
        self.protocol = ClientProtocol(
            parse_uri(uri),
            origin=None if origin is None else Origin(origin),
            subprotocols=[Subprotocol(subprotocol)],
            max_size=None,
        )
        self.messages: deque[str | bytes] = deque()
        """Whole messages received and not yet taken (recv)."""
        self._parts: list[bytes] = []
        self._text = False
        protocol = self.protocol
        protocol.send_request(protocol.connect())
        self._flush()
        deadline = time.monotonic() + timeout
        while protocol.state is State.CONNECTING:
            self._read(deadline)
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        if protocol.state is not State.OPEN:
            raise InvalidHandshake("the connection closed during the upgrade")

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    def send(self, message: str | bytes | list[bytes]) -> None:
        """One message; a list: one message in that many fragments (RFC 6455 §5.4)."""
        protocol = self.protocol
        if isinstance(message, str):
            protocol.send_text(message.encode())
        elif isinstance(message, bytes):
            protocol.send_binary(message)
        else:
            last = len(message) - 1
            for i, part in enumerate(message):
                if i == 0:
                    protocol.send_binary(part, fin=last == 0)
                else:
                    protocol.send_continuation(part, fin=i == last)
        self._flush()

    def recv(self, timeout: float) -> str | bytes:
        """The next whole message.

        Raises:
            TimeoutError: none within `timeout` seconds.
            ConnectionClosed: the connection ended (close_code says how).
        """
        deadline = time.monotonic() + timeout
        while not self.messages:
            if self.protocol.state is State.CLOSED:
                raise self.protocol.close_exc
            self._read(deadline)
        return self.messages.popleft()

    def close(self) -> None:
        """The closing handshake (RFC 6455 §7.1.2), briefly, then the socket."""
        protocol = self.protocol
        try:
            if protocol.state is State.OPEN:
                protocol.send_close()
                self._flush()
            deadline = time.monotonic() + 2
            while protocol.state is not State.CLOSED:
                self._read(deadline)
        except (OSError, ConnectionClosed):
            pass  # the relay is gone or slow to close: the socket goes anyway
        finally:
            self.socket.close()

    def _read(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no message from the relay")
        self.socket.settimeout(left)
        try:
            data = self.socket.recv(READ)
        except ConnectionResetError:
            data = b""
        protocol = self.protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        self._flush()  # what the protocol answers by itself: pongs, the close's echo
        for event in protocol.events_received():
            if isinstance(event, Frame):
                self._frame(event)

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._text = frame.opcode is Opcode.TEXT
            self._parts = [frame.data]
        elif frame.opcode is Opcode.CONT:
            self._parts.append(frame.data)
        else:
            return  # control frames: the protocol answered them
        if frame.fin:
            data = b"".join(self._parts)
            self._parts = []
            self.messages.append(data.decode() if self._text else data)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.socket.sendall(data)
