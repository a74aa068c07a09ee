"""Which TLS peers are nodes of the cluster (README "Running a cluster"): a link between two
nodes is mutually authenticated by certificate. The node that dials presents its [tls]
certificate (transports/tls.py client_context) and checks the other's against [tls] ca and
[cluster] node_ca; a `tls:` listener asks for a client certificate (optional: clients have
none) and verifies one that comes against the same CAs.

Rules: a connection is a node link when its peer's certificate was verified in the handshake
and is signed by the key of a CA certificate of [cluster] node_ca, whose subject is its
issuer. The signature is checked here, not just the names: the handshake may have verified
the certificate against another trusted CA ([tls] ca, the system's store) that bears the
same name. Node certificates are therefore issued directly by a node CA, kept for the nodes
alone; an intermediate between them is not followed. A frame that comes over a node link is
never sent on to another node (routing/hop.py), so a stale directory cannot loop frames
between nodes.

The check needs the verified chain, which Python's ssl module gives from 3.13 only
(SSLObject.get_verified_chain): the `cryptography` package checks the signature instead,
once per connection that presents a certificate.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

__all__ = ["NodeCerts"]

logger = logging.getLogger(__name__)


class NodeCerts:
    __slots__ = ("cas",)

    def __init__(self, node_ca: Path) -> None:
        """Raises OSError or ssl.SSLError when `node_ca` holds no CA certificate."""
        try:
            certs = x509.load_pem_x509_certificates(node_ca.read_bytes())
        except ValueError as exc:
            raise ssl.SSLError(f"{node_ca}: {exc}") from None
        self.cas = [cert for cert in certs if _is_ca(cert)]
        if not self.cas:
            raise ssl.SSLError(f"{node_ca} holds no CA certificate")

    def is_node(self, transport: object) -> bool:
        """Whether the TLS connection of `transport` comes from (or goes to) a node."""
        get = getattr(transport, "get_extra_info", None)
        if get is None:
            return False
        if not get("peercert"):  # no certificate, or one not verified in the handshake
            return False
        tls = get("ssl_object")
        if not isinstance(tls, (ssl.SSLObject, ssl.SSLSocket)):
            return False
        der = tls.getpeercert(binary_form=True)
        if der is None or not self._issued(x509.load_der_x509_certificate(der)):
            return False
        logger.info("a link with another node of the cluster: %s", get("peername"))
        return True

    def _issued(self, cert: x509.Certificate) -> bool:
        """`cert` is signed by a node CA's key, under that CA's name."""
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue  # another name, a key type it cannot check, another key
            return True
        return False


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
