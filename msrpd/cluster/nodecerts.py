"""Which TLS peers are nodes of the cluster (README "Running a cluster"): a link between two
nodes is mutually authenticated by certificate. The node that dials presents its [tls]
certificate (transports/tls.py client_context) and checks the other's against [tls] ca and
[cluster] node_ca; a `tls:` listener asks for a client certificate (optional: clients have
none) and verifies one that comes against the same CAs.

Rules: a connection is a node link when its peer's certificate was verified in the handshake
and was issued by a CA certificate of [cluster] node_ca (its issuer is that CA's subject).
Node certificates are therefore issued directly by a node CA, kept for the nodes alone; an
intermediate between them is not followed. A frame that comes over a node link is never sent
on to another node (routing/hop.py), so a stale directory cannot loop frames between nodes.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

__all__ = ["NodeCerts"]

logger = logging.getLogger(__name__)

_Name = tuple[tuple[tuple[str, str], ...], ...]


class NodeCerts:
    __slots__ = ("issuers",)

    def __init__(self, node_ca: Path) -> None:
        """Raises OSError or ssl.SSLError when `node_ca` holds no CA certificate."""
        store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        store.load_verify_locations(node_ca)
        self.issuers: frozenset[_Name] = frozenset(
            _name(cert.get("subject")) for cert in store.get_ca_certs()
        )
        if not self.issuers:
            raise ssl.SSLError(f"{node_ca} holds no CA certificate")

    def is_node(self, transport: object) -> bool:
        """Whether the TLS connection of `transport` comes from (or goes to) a node."""
        get = getattr(transport, "get_extra_info", None)
        cert = None if get is None else get("peercert")
        # Empty or None: no certificate, or one not verified in the handshake.
        if not (isinstance(cert, dict) and cert and _name(cert.get("issuer")) in self.issuers):
            return False
        logger.info("a link with another node of the cluster: %s", get("peername") if get else "")
        return True


def _name(value: object) -> _Name:
    """A certificate name as the ssl module decodes it, as a hashable tuple."""
    if not isinstance(value, tuple):
        return ()
    return tuple(tuple((str(k), str(v)) for k, v in rdn) for rdn in value)
