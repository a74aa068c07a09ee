"""TlsWire: MSRP over TLS (msrps, RFC 4975 §14.1), and the TLS contexts for `tls:` listeners
and `msrps:` next hops (RFC 4976 §8: TLS between clients and relays; the relay presents its
certificate, client certificates are optional).

The loop's SSL transport does the TLS: the adapter differs from TCP in its names, and in that
its session state lives in this process, so the connection never moves to another worker.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ...config import TlsSettings
from .tcp import TcpWire

__all__ = ["TlsWire", "client_context", "server_context"]


class TlsWire(TcpWire):
    __slots__ = ()

    scheme = "msrps"
    kind = "tls"
    movable = False


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
