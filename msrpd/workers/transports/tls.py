"""TlsWire: MSRP over TLS (msrps, RFC 4975 §14.1), and the TLS contexts for `tls:` listeners
and `msrps:` next hops (RFC 4976 §8: TLS between clients and relays; the relay presents its
certificate, client certificates are optional).

The loop's SSL transport does the TLS: the adapter differs from TCP in its names, and in that
its session state lives in this process, so the connection never moves to another worker.

Reading (TlsReads): the TLS layer's application protocol is a buffered one
(asyncio.BufferedProtocol) in front of the connection, reading into a buffer the worker's TLS
connections share (TlsReading: one for those its listeners accept, one for those it opens).
Given a plain Protocol, uvloop's TLS layer allocates a 256 KiB bytes object for every read and
shrinks it to what was decrypted; glibc serves that size with mmap, mremap and munmap, and
page faults after them, whenever its heap has no free block as large (issue 14: about 13 us
per read on the benchmark machine, where the cmap route's heap happened to have one and the
relay route's had not). Each read is copied out of the shared buffer as bytes of its own size
before the connection sees it, so no read overlaps another's use of the buffer.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from ...config import TlsSettings
from .tcp import TcpWire

__all__ = ["READ_BUFFER", "TlsReading", "TlsReads", "TlsWire", "client_context", "server_context"]

READ_BUFFER = 256 * 1024
"""Bytes of the worker's shared TLS read buffer: uvloop's largest read (SSL_READ_MAX_SIZE),
so a buffer that fills up costs no more reads than without it."""


class TlsWire(TcpWire):
    __slots__ = ()

    scheme = "msrps"
    kind = "tls"
    movable = False


class TlsReads(asyncio.BufferedProtocol):
    """The TLS layer's application protocol for `conn` (an MsrpConnection): reads land in
    `buffer`, shared by the worker's TLS connections, and go to `conn.data_received` as
    bytes; everything else is `conn`'s own."""

    __slots__ = ("buffer", "conn")

    def __init__(self, conn: asyncio.Protocol, buffer: memoryview) -> None:
        self.conn = conn
        self.buffer = buffer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.data_received(self.buffer[:nbytes].tobytes())

    def eof_received(self) -> bool | None:
        return self.conn.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()


class TlsReading:
    """One buffer for the TLS connections that share it (a worker's listeners share one, its
    connections to next hops another: delivery.py), made when the first one comes."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer: memoryview | None = None

    def protocol(self, conn: asyncio.Protocol) -> TlsReads:
        """`conn` as the loop's TLS layer is to call it: reading into the shared buffer."""
        buffer = self.buffer
        if buffer is None:
            buffer = self.buffer = memoryview(bytearray(READ_BUFFER))
        return TlsReads(conn, buffer)


def server_context(tls: TlsSettings, node_ca: Path | None = None) -> ssl.SSLContext:
    """`node_ca` ([cluster] node_ca, for `tls:` listeners): a client certificate is asked for
    and, when one comes, verified against it too: another node's (cluster/nodecerts.py).
    Optional, so clients without one connect as before; not for wss, where a browser could
    prompt its user to pick one."""
    if tls.certificate is None or tls.private_key is None:
        raise ssl.SSLError("tls listener without [tls] certificate and private_key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca is not None:
        ctx.load_verify_locations(tls.ca)
    if node_ca is not None:
        ctx.load_verify_locations(node_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if tls.verify_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TlsSettings, node_ca: Path | None = None) -> ssl.SSLContext:
    """For outbound msrps connections: verify the next hop against [tls] ca (or the system's
    trust store) and `node_ca` ([cluster] node_ca: another node), and present our certificate
    when we have one (mutual TLS between relays, and between nodes)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    if node_ca is not None:
        ctx.load_verify_locations(node_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate is not None and tls.private_key is not None:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    return ctx
