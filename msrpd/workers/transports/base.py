"""Wire: what the connection needs of the transport under it (an adapter per wire protocol).

Rules: the adapter owns the asyncio transport. `attach` starts it and binds the two per-read
and per-write callables once: `receive` (what the connection's data_received hands the raw
bytes to) and `send` (what a flush hands the bytes to). For TCP and TLS they are the reader's
receive_data and the transport's write themselves, so the seam costs no call on the hot path;
a WebSocket adapter would bind its frame decoder and encoder there instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

__all__ = ["ChunkIds", "Receive", "Send", "SendAll", "Wire", "joined"]

Receive = Callable[[bytes], None]
Send = Callable[[bytes | memoryview], None]
SendAll = Callable[[list[bytes | memoryview]], None]
ChunkIds = Callable[[bytes, int], bytes | None]
"""(the id of a chunk the relay interrupts on its way out, its body bytes written) -> the
transaction id of the chunk that continues it, a transaction like the interrupted one's; None
when that chunk is not one of the relay's transactions (conn.MsrpConnection.continued)."""


def joined(send: Send) -> SendAll:
    """A SendAll that joins the pieces and hands them to `send` in one call (TLS records,
    WebSocket messages: one for what a flush writes, as before)."""

    def send_all(pieces: list[bytes | memoryview]) -> None:
        send(b"".join(pieces))

    return send_all


def _unattached(data: bytes | memoryview | list[bytes | memoryview]) -> None:
    raise RuntimeError("wire not attached")


class Wire:
    """The base of every wire (TcpWire, TlsWire, WsWire): a compiled class, not a Protocol,
    so the connection's per-read and per-write steps read its attributes in place (issue 16:
    through a Protocol each one was a generic lookup). Buffering, pausing and aborting are
    the asyncio stream transport's."""

    __slots__ = (
        "direct",
        "kind",
        "local_sock",
        "movable",
        "receive",
        "scheme",
        "send",
        "send_all",
        "transport",
    )

    def __init__(self, local_sock: str, scheme: str, kind: str, movable: bool) -> None:
        self.local_sock = local_sock
        """The listening socket it was accepted on, `proto:ip:port`; "" when outbound."""
        self.scheme = scheme
        """The URI scheme of its peer: msrp or msrps (RFC 4975 §9)."""
        self.kind = kind
        """The registry key's prefix: tcp, tls, ws or wss (never dialled)."""
        self.movable = movable
        """Its whole state is the kernel socket: it may be passed to another worker."""
        self.transport: asyncio.Transport | None = None
        """Once attached; the socket under it (fd passing, shutdown) is reached through it."""
        self.receive: Receive = _unattached
        """What the connection hands the bytes it reads to (b"" at EOF); bound by attach."""
        self.direct = False
        """`receive` is the feed attach was given, as it is (TCP, and TLS: the stream below
        decrypts): the connection may call that reader itself, natively (through `receive`,
        a generic call: issue 16). conn.py gives attach its intake's reader's receive_data."""
        self.send: Send = _unattached
        """What the connection hands the bytes it writes to; bound by attach."""
        self.send_all: SendAll = _unattached
        """`send` for several pieces at once, in order: over plain TCP the transport's
        writelines (one writev, no join: issue 16), else `send` of the pieces joined."""

    def attach(
        self, transport: asyncio.BaseTransport, feed: Receive, high: int, chunk_ids: ChunkIds
    ) -> str:
        """Start on `transport`: bytes read go to `feed`; writes past `high` bytes buffered
        pause writing; a chunk the wire itself interrupts continues under an id from
        `chunk_ids` (WebSocket re-chunking). Returns the peer's `host:port`."""
        raise NotImplementedError

    def self_uri(self) -> bytes:
        """This relay's URI as the peer reached it (the listening socket), b"" when outbound."""
        raise NotImplementedError

    def tick(self, now: float, last_read: float) -> str:
        """Housekeeping, once a tick: why the connection must close now, "" when it need not
        (a WebSocket upgrade's deadline; its Pings are sent here too)."""
        return ""

    def close(self, going_away: bool = False) -> None:
        """Close once what is buffered is written; `going_away`: the relay is stopping
        (a WebSocket peer is told 1001, RFC 6455 §7.4.1)."""
        if self.transport is not None:
            self.transport.close()

    def buffered(self) -> int:
        """Bytes sent and not yet passed to the kernel."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Close, dropping what is buffered; not at once under uvloop: its transport closes
        the socket in a later callback, and libuv writes what it holds until then whenever
        the peer reads (shut_write first stops that)."""
        if self.transport is not None:
            self.transport.abort()

    def shut_write(self) -> None:
        """Let nothing more reach the kernel: the socket is shut down for writing now, so the
        peer gets what the kernel holds, then a FIN, and nothing that is still buffered.
        What `buffered` says is final from here on."""
        transport = self.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            return
        try:  # the transport's socket object has no shutdown: a duplicate's is the socket's
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return
        with dup, contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_WR)
