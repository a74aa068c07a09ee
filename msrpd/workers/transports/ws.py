"""WsWire: MSRP over WebSocket (RFC 7977) for `ws:` and `wss:` listeners, WsServer
(wsconn.py) on the loop's TCP or TLS transport.

Rules:
- Inbound only: the relay never opens a WebSocket connection (RFC 7977 §5.2, §6); frames for
  a WebSocket client go over the connection it opened, reached by its token.
- Its state (the upgrade, a fragmented message half read or written) lives in this process:
  the connection never moves to another worker, like TLS.
- Timers are the worker's tick (housekeeping.py calls `tick`): an upgrade not complete after
  `upgrade_timeout` closes the connection; a connection quiet for `ping_interval` is pinged
  (RFC 7977 §6), so a client that answers keeps its tokens.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from typing import cast

from wsproto.frame_protocol import CloseReason

from ...config import WebSocketSettings
from ..peers import format_peer
from .base import ChunkIds, Receive, Wire, joined
from .wsconn import WsServer
from .wsout import NewTid

__all__ = ["WsWire"]


def _rechunk_ids(chunk_ids: ChunkIds) -> NewTid:
    """A re-chunk's transaction id: a transaction's when the interrupted chunk is one (the
    relay route), else unguessable, like every tid we make (RFC 4975 §7.1)."""

    def new_tid(tid: bytes, written: int) -> bytes:
        return chunk_ids(tid, written) or secrets.token_hex(8).encode()

    return new_tid


class WsWire(Wire):
    __slots__ = (
        "deadline",
        "ends",
        "in_total",
        "last_write",
        "sent_in",
        "server",
        "settings",
        "wire_total",
    )

    def __init__(self, local_sock: str, settings: WebSocketSettings, secure: bool) -> None:
        scheme, kind = ("msrps", "wss") if secure else ("msrp", "ws")  # RFC 7977 §5.2
        super().__init__(local_sock, scheme, kind, False)
        self.settings = settings
        self.server: WsServer | None = None
        self.deadline = 0.0
        """The upgrade must be complete by then (time.monotonic)."""
        self.last_write = 0.0
        # What a stop must report is counted in MSRP frames (stopping.py): a frame is in the
        # kernel once its last message is wholly there (RFC 7977 §5.1: one frame per message).
        self.in_total = 0
        """MSRP bytes sent."""
        self.sent_in = 0
        """MSRP bytes up to the end of the last frame whose messages are all in the kernel."""
        self.wire_total = 0
        """Bytes handed to the transport (HTTP, WebSocket frames, control frames)."""
        self.ends: deque[tuple[int, int]] = deque()
        """(MSRP offset, transport offset) just past each frame, and its last message, that
        the transport may still hold, oldest first."""

    def attach(
        self, transport: asyncio.BaseTransport, feed: Receive, high: int, chunk_ids: ChunkIds
    ) -> str:
        self.transport = t = cast(asyncio.Transport, transport)
        t.set_write_buffer_limits(high=high)
        s = self.settings
        new_tid = _rechunk_ids(chunk_ids)
        self.server = WsServer(feed, s.origins, s.max_upgrade_bytes, s.max_message, new_tid)
        self.receive, self.send = self._receive, self._send
        self.send_all = joined(self._send)  # one MSRP byte stream to re-chunk, as before
        self.last_write = now = time.monotonic()
        self.deadline = now + s.upgrade_timeout
        host, port = t.get_extra_info("peername")[:2]
        return format_peer(host, port)

    def _receive(self, data: bytes) -> None:
        server, transport = self.server, self.transport
        if server is None or transport is None:
            return
        out = server.receive(data)
        if out:
            self._write(out)
        if server.closing:
            transport.close()

    def _send(self, data: bytes | memoryview) -> None:
        start = self.in_total
        self.in_total = start + len(data)  # never sent if not encoded now: counted unsent
        server, transport = self.server, self.transport
        if server is None or transport is None:
            return
        out = server.encode(data)
        if not out:
            return
        wire = self.wire_total
        self._write(out)
        self.last_write = time.monotonic()
        ends, ended = self.ends, server.ended
        if not transport.get_write_buffer_size():  # the usual case: the kernel took it all
            if ended:
                self.sent_in = start + ended[-1][0]
            elif ends:
                self.sent_in = ends[-1][0]
            ends.clear()
        else:
            ends.extend((start + msrp, wire + out_end) for msrp, out_end in ended)

    def _write(self, out: bytes) -> None:
        assert self.transport is not None
        self.wire_total += len(out)
        self.transport.write(out)

    def buffered(self) -> int:
        """MSRP bytes sent whose frame is not wholly in the kernel (a message half there never
        reaches the client): what a stop reports is exact (RFC 4975 §7.1.2)."""
        transport, ends = self.transport, self.ends
        if transport is None:
            return 0
        if ends:
            in_kernel = self.wire_total - transport.get_write_buffer_size()
            while ends and ends[0][1] <= in_kernel:
                self.sent_in = ends.popleft()[0]
        return self.in_total - self.sent_in

    def tick(self, now: float, last_read: float) -> str:
        """Housekeeping: why the connection must close now ("" when it need not); pings it
        when nothing went either way for ping_interval."""
        server, transport = self.server, self.transport
        if server is None or transport is None:
            return ""
        if not server.open:
            return "" if server.ws is not None or now < self.deadline else "upgrade too slow"
        interval = self.settings.ping_interval
        if interval and now - max(self.last_write, last_read) >= interval:
            self._write(server.ping())
            self.last_write = now
        return ""

    def self_uri(self) -> bytes:
        """This relay's URI as the client reached it, with the ws transport (RFC 7977 §5.2)."""
        address = self.local_sock.partition(":")[2]
        return f"{self.scheme}://{address};ws".encode()

    def close(self, going_away: bool = False) -> None:
        """The close handshake's first frame (1000, or 1001 when the relay is stopping), then
        the socket once written."""
        server, transport = self.server, self.transport
        if transport is None:
            return
        if server is not None:
            code = CloseReason.GOING_AWAY if going_away else CloseReason.NORMAL_CLOSURE
            out = server.close(code)
            if out:
                self._write(out)
        transport.close()
