"""What a peer that is not a node cannot do to forwarding between nodes (issue 17, review),
with real servers: a private redis-server and two msrpd nodes (test_cluster_forward.py's).
Checked: a certificate of another CA bearing the node CA's very name makes no node link; one
connection, or many from one address, asking where made-up tokens live cannot take the
lookups other senders need; what a sender hears of a frame node 2 refused names node 1, as
the answer for a token nobody holds does."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from .redisserver import RedisServer
from .relay import PASSWORDS, REALM
from .test_cluster_forward import Nodes, Shape, two_nodes


def _same_name(ca: trustme.CA) -> trustme.CA:
    """Another CA (another key) whose subject is `ca`'s, byte for byte."""
    theirs = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    subject = theirs.subject

    def value(oid: x509.ObjectIdentifier) -> str:
        return str(subject.get_attributes_for_oid(oid)[0].value)

    other = trustme.CA(
        organization_name=value(x509.NameOID.ORGANIZATION_NAME),
        organization_unit_name=value(x509.NameOID.ORGANIZATIONAL_UNIT_NAME),
    )
    mine = x509.load_pem_x509_certificate(other.cert_pem.bytes())
    assert mine.subject == subject and mine.public_key() != theirs.public_key()
    return other


@pytest.fixture
def impostor(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Nodes, trustme.CA]]:
    """Nodes whose [tls] ca (client certificates the listeners accept: say, the operator's
    client CA) holds a CA named exactly as the node CA."""
    ca = trustme.CA()
    other = _same_name(ca)
    clients_ca = tmp_path / "clients-ca.pem"
    other.cert_pem.write_to_path(clients_ca)
    for nodes in two_nodes(redis_server, tmp_path, Shape(ca=ca, tls_ca=clients_ca)):
        yield nodes, other


def test_a_certificate_of_another_ca_with_the_node_cas_name_is_no_node_link(
    impostor: tuple[Nodes, trustme.CA],
) -> None:
    """Its handshake succeeds ([tls] ca trusts its CA) and its issuer name is the node CA's,
    but the node CA's key did not sign it: a client like any other, which may AUTH. A
    certificate the node CA issued is a node link on the same listener (403 to its AUTH)."""
    nodes, other = impostor
    context = ssl.create_default_context()
    nodes.ca.configure_trust(context)
    other.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    client = nodes.client(nodes.n2, context)
    answer = client.auth("alice", PASSWORDS["alice"], REALM).frame
    assert answer.code == 200, answer.buf[:200]
    assert "a link with another node" not in nodes.n2.log()
    link = ssl.create_default_context()
    nodes.ca.configure_trust(link)
    nodes.ca.issue_cert("localhost", "127.0.0.1").configure_cert(link)
    as_node = nodes.client(nodes.n2, link)
    refused = as_node.auth("bob", PASSWORDS["bob"], REALM).frame
    assert (refused.code, refused.reason) == (403, b"Forbidden (no session on a node link)")
    assert nodes.n2.log().count("a link with another node") == 1
