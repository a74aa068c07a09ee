"""WsServer: the server side of one WebSocket connection that carries MSRP (RFC 7977), sans-IO
over wsproto (RFC 6455 framing) and h11 (the upgrade request); ws.py puts it on a socket.

Rules:
- The upgrade (RFC 6455 §4.2.1, RFC 7977 §4.1), checked in this order: a complete request
  within `max_upgrade` bytes (else 431), a GET (else 405), Upgrade: websocket and Connection:
  upgrade (else 426), Sec-WebSocket-Version 13 (else 426 naming it), an Origin in `origins`
  when that is set (else 403), the `msrp` subprotocol offered (else 400); a missing key or
  Host, or bad HTTP: 400. A refusal is answered and the connection closes.
- In: each data message's payload, binary or text (text is read as its UTF-8 bytes, RFC 7977
  §4.2), goes to `feed` piece by piece as it arrives: the MSRP reader streams, so nothing is
  buffered here (RFC 6455 §5.4 fragments are just more pieces). A message over `max_message`
  closes with 1009; wsproto fails an unmasked client frame or a bad opcode with 1002 and
  bad UTF-8 in a text message with 1007 (RFC 6455 §5.1, §5.2, §8.1).
- Out: what the connection writes becomes one message per MSRP chunk, re-chunked to fit
  `max_message` (wsout.py, RFC 7977 §5.1). A frame whole in one message goes as text when
  the client's last message was text and the frame is UTF-8 (RFC 7977 §4.2 lets us use
  either), else binary; one sent as it comes goes as binary fragments of one message.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from .wsout import NewTid, OutFrames

__all__ = ["SUBPROTOCOL", "WsServer"]

SUBPROTOCOL = "msrp"  # RFC 7977 §4.1, the IANA WebSocket subprotocol name
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}


class WsServer:
    __slots__ = (
        "closing",
        "ended",
        "feed",
        "frames",
        "max_message",
        "max_upgrade",
        "message_bytes",
        "origins",
        "request",
        "text",
        "ws",
    )

    def __init__(
        self,
        feed: Callable[[bytes], None],
        origins: tuple[str, ...],
        max_upgrade: int,
        max_message: int,
        new_tid: NewTid,
    ) -> None:
        """`feed` takes the MSRP bytes read (b"" at the end); `origins` are lower case;
        `new_tid` makes the transaction id of a chunk re-chunking adds (wsout.py)."""
        self.feed = feed
        self.origins = origins
        self.max_upgrade = max_upgrade
        self.max_message = max_message
        self.request = bytearray()
        """The upgrade request read so far; emptied once upgraded."""
        self.ws: WSConnection | None = None
        """Once upgraded."""
        self.closing = False
        """A close (or refusal) is written: close the socket after it, read nothing more."""
        self.message_bytes = 0
        self.text = False
        """The client's last message was text: whole frames go back as text."""
        self.frames = OutFrames(max_message, new_tid)
        self.ended: list[tuple[int, int]] = []
        """Of the last encode, for each MSRP frame it ended: (the offset in the MSRP bytes just
        past it, the offset in the output just past its last message)."""

    @property
    def open(self) -> bool:
        return self.ws is not None and self.ws.state is ConnectionState.OPEN

    # -- in ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Take bytes read from the socket (b"" at EOF); returns the bytes to write back."""
        if self.closing:
            return b""
        ws = self.ws
        if ws is None:
            return self._upgrade(data)
        if not data:
            self.closing = True
            self.feed(b"")
            return b""
        ws.receive_data(data)
        return self._events(ws)

    def _events(self, ws: WSConnection) -> bytes:
        out = b""
        for event in ws.events():
            if self.closing:
                break
            if isinstance(event, (BytesMessage, TextMessage)):
                out += self._message(event)
            elif isinstance(event, Ping):
                out += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                # The client's close is answered (RFC 6455 §5.5.1); a frame wsproto could
                # not parse is failed with its code.
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    out += ws.send(event.response())
                else:
                    out += self.close(event.code, event.reason or "")
                self.closing = True
        return out

    def _message(self, event: BytesMessage | TextMessage) -> bytes:
        data = event.data
        payload = data.encode() if isinstance(data, str) else bytes(data)
        size = self.message_bytes + len(payload)
        if size > self.max_message:
            return self.close(CloseReason.MESSAGE_TOO_BIG, f"over {self.max_message} bytes")
        self.text = isinstance(event, TextMessage)
        self.message_bytes = 0 if event.message_finished else size
        if payload:
            self.feed(payload)
        return b""

    def _upgrade(self, data: bytes) -> bytes:
        request = self.request
        request += data
        if len(request) > self.max_upgrade:
            return self._refuse(431, b"")
        end = request.find(b"\r\n\r\n")
        if end < 0:
            if not data:  # EOF before a whole request
                self.closing = True
                self.feed(b"")
            return b""
        refusal = self._check(bytes(request[: end + 4]))
        if refusal is not None:
            return refusal
        self.ws = ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(bytes(request))
            accepted = any(isinstance(e, Request) for e in ws.events())
        except RemoteProtocolError:
            accepted = False
        if not accepted:
            self.ws = None
            return self._refuse(400, b"")
        self.request = bytearray()
        return ws.send(AcceptConnection(subprotocol=SUBPROTOCOL)) + self._events(ws)

    def _check(self, head: bytes) -> bytes | None:
        """The refusal for the request `head`, or None when it may be upgraded."""
        parser = h11.Connection(h11.SERVER)
        parser.receive_data(head)
        try:
            request = parser.next_event()
        except h11.RemoteProtocolError:
            return self._refuse(400, b"")
        if not isinstance(request, h11.Request):
            return self._refuse(400, b"")
        if request.method != b"GET":
            return self._refuse(405, b"Allow: GET\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for name, value in request.headers:
            headers.setdefault(name, []).append(value)

        def tokens(name: bytes) -> set[bytes]:
            return {t.strip().lower() for v in headers.get(name, ()) for t in v.split(b",")}

        if b"websocket" not in tokens(b"upgrade") or b"upgrade" not in tokens(b"connection"):
            return self._refuse(426, b"Upgrade: websocket\r\nConnection: Upgrade\r\n")
        if headers.get(b"sec-websocket-version") != [b"13"]:
            return self._refuse(426, b"Sec-WebSocket-Version: 13\r\n")
        origin = headers.get(b"origin", [b""])[0].decode("latin-1").lower()
        if self.origins and origin not in self.origins:
            return self._refuse(403, b"")
        if SUBPROTOCOL.encode() not in tokens(b"sec-websocket-protocol"):
            return self._refuse(400, b"")
        return None

    def _refuse(self, status: int, headers: bytes) -> bytes:
        self.closing = True
        line = f"HTTP/1.1 {status} {_REASONS[status]}\r\n".encode()
        return line + headers + b"Connection: close\r\nContent-Length: 0\r\n\r\n"

    # -- out --------------------------------------------------------------------------------

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """The close frame to write, when open (RFC 6455 §5.5.1); read nothing more."""
        self.closing = True
        ws = self.ws
        if ws is None or ws.state is not ConnectionState.OPEN:
            return b""
        return ws.send(CloseConnection(code=code, reason=reason))

    def ping(self) -> bytes:
        ws = self.ws
        if ws is None or ws.state is not ConnectionState.OPEN:
            return b""
        return ws.send(Ping())

    def encode(self, data: bytes | memoryview) -> bytes:
        """The WebSocket frames for MSRP bytes the connection writes (wsout.py); b"" once
        closing. `ended` says where each MSRP frame they end is, in `data` and in them."""
        ended = self.ended
        ended.clear()
        ws = self.ws
        if ws is None or ws.state is not ConnectionState.OPEN:
            return b""
        out = []
        text, frames = self.text, self.frames
        pieces = frames.split(data)
        marks = frames.ends
        wire, mark = 0, 0
        at = marks[0][0] if marks else -1
        for index, (payload, finished, whole) in enumerate(pieces):
            message: TextMessage | BytesMessage | None = (
                self._text(payload) if whole and text else None
            )
            if message is None:
                message = BytesMessage(data=payload, message_finished=finished)
            encoded = ws.send(message)
            out.append(encoded)
            wire += len(encoded)
            if index == at:  # an MSRP frame's last message: (its end in data, in the output)
                ended.append((marks[mark][1], wire))
                mark += 1
                at = marks[mark][0] if mark < len(marks) else -1
        return b"".join(out)

    @staticmethod
    def _text(frame: bytes) -> TextMessage | None:
        try:
            return TextMessage(data=frame.decode())
        except UnicodeDecodeError:
            return None  # a binary body: a text message must be UTF-8 (RFC 6455 §8.1)
