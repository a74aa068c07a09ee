"""What a peer that is not a node cannot do to forwarding between nodes (issue 17, review),
with real servers: a private redis-server and two msrpd nodes (test_cluster_forward.py's).
Checked: a certificate of another CA bearing the node CA's very name makes no node link; one
connection, or many from one address, asking where made-up tokens live cannot take the
lookups other senders need; what a sender hears of a frame node 2 refused names node 1, as
the answer for a token nobody holds does."""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from msrpd.protocol.writer import build_reply

from ..msrpclient import MsrpClient
from .redisserver import RedisServer
from .relay import PASSWORDS, REALM
from .test_cluster_forward import Nodes, Shape, _send, two_nodes


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
    for made in two_nodes(redis_server, tmp_path, Shape(ca=ca, tls_ca=clients_ca)):
        yield made, other


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


@pytest.fixture
def one_worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[Nodes]:
    """Nodes of one worker each (every connection to node 1 shares its lookups), whose
    lookups may take 3 s."""
    yield from two_nodes(redis_server, tmp_path, Shape(children=1, timeout=3.0))


@contextmanager
def _redis_stopped(redis: RedisServer) -> Iterator[None]:
    """Redis slow: stopped (SIGSTOP to the server this test started), every read waiting."""
    assert redis.proc is not None
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)


def test_probers_of_made_up_tokens_leave_lookups_for_a_real_one(one_worker: Nodes) -> None:
    """Redis slow (stopped for a second). One client of node 1 sends 64 SENDs through node 1
    twice (its token, then a made-up one of node 1's: each is answered 200 before the inner
    hop asks, README), and 64 connections from another address send one SEND each for a
    made-up token. They get PER_CONN and PER_ADDR lookups (finder.py); the others are
    answered at once, a REPORT 481 and a 481, as for any unknown token. A peer from a third
    address then sends for Bob's token on node 2: its lookup waits for Redis, and the SEND
    reaches Bob."""
    nodes = one_worker
    bob, token = nodes.bob()
    alice = nodes.client(nodes.n1)
    assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    port = nodes.n1.tls_port or 0
    probers = [MsrpClient(port, tls=nodes.tls, timeout=10, source="127.0.0.4") for _ in range(64)]
    nodes.opened += probers
    peer = MsrpClient(port, tls=nodes.tls, timeout=10, source="127.0.0.2")
    nodes.opened.append(peer)
    with _redis_stopped(nodes.redis):
        for n in range(64):
            to_path = f"{alice.use_path} {nodes.at_n1(secrets.token_urlsafe(16))} {bob.uri}"
            _send(alice, to_path, f"a{n}", b"through node 1 twice")
        for n in range(64):
            assert alice.recv().frame.code == 200
            report = alice.recv().frame
            assert (report.method, report.header("Message-ID")) == (b"REPORT", f"a{n}".encode())
            assert report.header("Status") == b"000 481 Session Does Not Exist"
        sent = [
            _send(p, f"{nodes.at_n1(secrets.token_urlsafe(16))} {bob.uri}", f"p{n}", b"guess")
            for n, p in enumerate(probers)
        ]
        for prober, tid in zip(
            probers[16:], sent[16:], strict=True
        ):  # node 1 reads them in this order
            answer = prober.recv(timeout=5).frame
            assert (answer.tid, answer.code) == (tid, 481)
        tid = _send(peer, f"{nodes.at_n1(token)} {bob.uri}", "real", b"for Bob")
        with pytest.raises(TimeoutError):  # it waits for Redis
            peer.recv(timeout=0.5)
    answer = peer.recv(timeout=5).frame
    assert (answer.tid, answer.code) == (tid, 200)
    got = bob.recv(timeout=5).frame
    assert got.header("Message-ID") == b"real"
    assert got.header("From-Path") == f"{bob.use_path} {peer.uri}".encode()
    bob.send_raw(build_reply(got, 200, "OK"))
    for prober, tid in zip(probers[:16], sent[:16], strict=True):  # their lookups answered: no node
        answer = prober.recv(timeout=5).frame
        assert (answer.tid, answer.code) == (tid, 481)
    for client in (alice, bob, peer, *probers):
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)
    counters = nodes.n1.counters()
    assert counters["cluster_lookups"] == 2 + 16 + 1
    # Alice's frames over her share waited for her oldest lookup, as far as the finder
    # knows: they could not (README), so they were answered as it was out.
    assert counters["cluster_lookups_refused"] == 48
    assert counters["cluster_lookup_failures"] == 0
    assert counters["cluster_forwarded"] == 1


@pytest.fixture
def nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(redis_server, tmp_path)


def test_what_node_2_answers_comes_from_node_1_as_a_local_answer_does(nodes: Nodes) -> None:
    """A request whose response is end to end (NICKNAME, an unknown method: RFC 4976 §6.4.2)
    for Bob's token sent to node 1: Bob's answer comes back with the URI the sender addressed
    at the front of From-Path, not node 2's. Once his session has ended (node 1 still keeps
    his token on node 2), node 2's 481 reaches the sender as the 481 node 1 gives for a token
    nobody holds, byte for byte but the ids: nothing says the token lived elsewhere."""
    bob, token = nodes.bob()
    peer = nodes.client(nodes.n1)
    to_path = f"{nodes.at_n1(token)} {bob.uri}"
    tid = peer.request("NICKNAME", to_path)
    got = bob.recv().frame
    assert got.method == b"NICKNAME"
    assert got.header("From-Path") == f"{bob.use_path} {peer.uri}".encode()
    bob.send_raw(build_reply(got, 200, "OK"))
    answer = peer.recv().frame
    assert (answer.tid, answer.code) == (tid, 200)
    assert answer.header("To-Path") == peer.uri.encode()
    assert answer.header("From-Path") == f"{nodes.at_n1(token)} {bob.uri}".encode()
    bob.close()
    time.sleep(0.3)  # node 2 forgets the token when the connection closes
    tid = peer.request("NICKNAME", to_path)
    refused = peer.recv().frame
    never = "nosuchtoken"
    never_tid = peer.request("NICKNAME", f"{nodes.at_n1(never)} {bob.uri}")
    unknown = peer.recv().frame
    assert (refused.tid, refused.code, unknown.tid, unknown.code) == (tid, 481, never_tid, 481)

    def shape(frame: bytes, tid: bytes, token: str) -> bytes:
        return frame.replace(tid, b"<tid>").replace(token.encode(), b"<token>")

    assert shape(bytes(refused.buf), tid, token) == shape(bytes(unknown.buf), never_tid, never)
    with pytest.raises(TimeoutError):
        peer.recv(timeout=0.5)
    counters = nodes.n1.counters()
    assert counters["cluster_forwarded"] == 2


def test_an_answer_through_node_1_twice_comes_back_along_the_path(nodes: Nodes) -> None:
    """Alice of node 1 sends a NICKNAME to `<node1/A> <node1/B> <bob>`, B being node 2's:
    the first one starts the lookup (it cannot wait, README); the next one reaches Bob, and
    his answer reaches Alice with both URIs of node 1 in From-Path, in order, and none of
    node 2's."""
    bob, token = nodes.bob()
    alice = nodes.client(nodes.n1)
    assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    to_path = f"{alice.use_path} {nodes.at_n1(token)} {bob.uri}"
    first = alice.request("NICKNAME", to_path)
    answer = alice.recv().frame
    assert (answer.tid, answer.code) == (first, 481)
    time.sleep(0.2)  # the lookup lands
    tid = alice.request("NICKNAME", to_path)
    got = bob.recv().frame
    assert got.header("From-Path") == f"{bob.use_path} {alice.use_path} {alice.uri}".encode()
    bob.send_raw(build_reply(got, 200, "OK"))
    answer = alice.recv().frame
    assert (answer.tid, answer.code) == (tid, 200)
    assert answer.header("To-Path") == alice.uri.encode()
    assert answer.header("From-Path") == f"{to_path}".encode()
    for client in (alice, bob):
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.5)
