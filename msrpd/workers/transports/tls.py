"""TlsWire: MSRP over TLS (msrps, RFC 4975 §14.1), and the TLS contexts for `tls:` listeners
and `msrps:` next hops (RFC 4976 §8: TLS between clients and relays; the relay presents its
certificate, client certificates are optional).

The relay runs TLS itself (tlsstream.py: what a stop must report is exact only so): the
adapter differs from TCP in its names, and in that its session state lives in this process,
so the connection never moves to another worker.

Reading (TlsReading): the TLS streams decrypt into a buffer the worker's TLS connections
share (one for those its listeners accept, one for those it opens), and each read is copied
out of it as bytes of its own size before the connection sees it, so no read overlaps another's
use of the buffer. A buffer per read would be a 256 KiB allocation that glibc serves with
mmap, mremap and munmap, and page faults after them, whenever its heap has no free block as
large (issue 14: about 13 us per read on the benchmark machine).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from ...config import TlsSettings
from .base import ChunkIds, Receive, joined
from .tcp import TcpWire
from .tlsstream import TlsStream

__all__ = ["READ_BUFFER", "TlsReading", "TlsWire", "client_context", "server_context"]

READ_BUFFER = 256 * 1024
"""Bytes of the worker's shared TLS read buffer: the most one TCP read brings (uvloop's read
buffer), so one read is one call to the connection."""


class TlsWire(TcpWire):
    __slots__ = ()

    def __init__(self, local_sock: str = "") -> None:
        super().__init__(local_sock, "msrps", "tls", False)

    def attach(
        self, transport: asyncio.BaseTransport, feed: Receive, high: int, chunk_ids: ChunkIds
    ) -> str:
        peer = super().attach(transport, feed, high, chunk_ids)
        # Joined: the stream's writelines would make each piece its own TLS record.
        self.send_all = joined(self.send)
        return peer


class TlsReading:
    """One buffer for the TLS streams that share it (a worker's listeners share one, its
    connections to next hops another: delivery.py), made when the first one comes."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer: memoryview | None = None

    def stream(
        self,
        conn: asyncio.Protocol,
        context: ssl.SSLContext,
        timeout: float,
        server_hostname: str | None = None,
    ) -> TlsStream:
        """The protocol for the TCP transport of `conn`'s connection: TLS, server side unless
        `server_hostname`, with `timeout` seconds for the handshake, reading into the shared
        buffer (tlsstream.py)."""
        buffer = self.buffer
        if buffer is None:
            buffer = self.buffer = memoryview(bytearray(READ_BUFFER))
        return TlsStream(conn, context, buffer, timeout, server_hostname)


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
        _trust_nodes(ctx, node_ca)
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
        _trust_nodes(ctx, node_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate is not None and tls.private_key is not None:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    return ctx


def _trust_nodes(ctx: ssl.SSLContext, node_ca: Path) -> None:
    """Trust the node CA as an anchor even when it is an intermediate (its root left out:
    listed too, the root would be a node CA, cluster/nodecerts.py)."""
    ctx.load_verify_locations(node_ca)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
