"""Forwarding between nodes (issue 17, README "Running a cluster"), with real servers: a private
redis-server and two msrpd nodes of two workers each, every node's certificate issued by the
cluster's node CA (`[cluster] node_ca`). Bob AUTHs on node 2; a peer (a relay or an endpoint
that was handed Bob's token under node 1's name: a shared name behind a balancer, a misrouted
peer) sends to node 1. Checked: every frame reaches Bob once, in order, with the paths he would
see had it gone to node 2 directly, its 200 coming back to the sender under the sender's own
transaction id, from peers on both of node 1's workers; failure REPORTs come back; Redis down
gets the same 481 as a token nobody holds, within [cluster] timeout, and no hang; a stale
directory never makes the nodes pass a frame back and forth; a peer that is not a node gets
nothing a node link has (it is held to the session rates, a node link is not; a certificate
of another CA is refused) and cannot make node 1 reach any address but a node's."""

from __future__ import annotations

import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from msrpd.protocol.writer import build_reply, build_request

from ..msrpclient import MsrpClient, new_tid
from .redisserver import RedisServer
from .relay import LIMITS_OFF, PASSWORDS, REALM, Relay, free_port, title, wait_for
from .test_cluster_relay import _worker_of

TIMEOUT = 1.0
"""[cluster] timeout: how long a lookup may take."""


@dataclass
class Nodes:
    redis: RedisServer
    n1: Relay
    n2: Relay
    ca: trustme.CA
    tls: ssl.SSLContext
    """A client's context: trusts the node CA, presents no certificate."""
    opened: list[MsrpClient]

    def client(self, node: Relay, tls: ssl.SSLContext | None = None) -> MsrpClient:
        assert node.tls_port is not None
        client = MsrpClient(node.tls_port, tls=tls or self.tls, timeout=10)
        self.opened.append(client)
        return client

    def bob(self) -> tuple[MsrpClient, str]:
        """Bob, AUTHed on node 2, once node 2's agent has put his token in the directory:
        (his client, his token)."""
        bob = self.client(self.n2)
        assert bob.auth("bob", PASSWORDS["bob"], REALM).frame.code == 200
        token = _token(bob)
        with self.redis.client() as redis:
            wait_for(lambda: redis.get(f"msrpd:sess:{token}") == "n2", what="the directory")
        return bob, token

    def at_n1(self, token: str) -> str:
        """Bob's token under node 1's address: what a misrouted peer sends to."""
        return f"msrps://127.0.0.1:{self.n1.tls_port}/{token};tcp"


def _token(client: MsrpClient) -> str:
    match = re.search(r"/([^/;]+);tcp$", client.use_path or "")
    assert match, client.use_path
    return match[1]


def _node(
    redis: RedisServer,
    ca_file: Path,
    cert: Path,
    key: Path,
    name: str,
    shape: Shape,
    **limits: float,
) -> Relay:
    tls = {"certificate": str(cert), "private_key": str(key)}
    if shape.tls_ca is not None:
        tls["ca"] = str(shape.tls_ca)
    relay = Relay(
        children=shape.children,
        tls=tls,
        msrp={"route": None},
        limits={**LIMITS_OFF, **limits},
    )
    relay.sections["msrp"]["use_path_addr"] = f"127.0.0.1:{relay.tls_port}"
    relay.sections["cluster"] = {
        "redis": redis.url,
        "node": name,
        "heartbeat": 0.25,
        "node_ttl": 2.0,
        "timeout": shape.timeout,
        "retry_max": 0.5,
        "node_ca": str(ca_file),
    }
    relay.write_config()
    return relay


@dataclass(frozen=True)
class Shape:
    """What a test changes of the nodes besides [limits]."""

    children: int = 2
    ca: trustme.CA | None = None
    """The node CA (default: a new one)."""
    tls_ca: Path | None = None
    """[tls] ca: CAs the nodes trust besides the node CA (default: none)."""
    timeout: float = TIMEOUT


def two_nodes(
    redis: RedisServer, tmp_path: Path, shape: Shape | None = None, **limits: float
) -> Iterator[Nodes]:
    shape = shape or Shape()
    ca = shape.ca or trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("node-ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(ca_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    made: list[Relay] = []
    nodes = None
    try:
        for name in ("n1", "n2"):
            relay = _node(redis, ca_file, cert_file, key_file, name, shape, **limits)
            made.append(relay)
            result = relay.start()
            assert result.returncode == 0, result.stderr + relay.log()
        tls = ssl.create_default_context()
        ca.configure_trust(tls)
        nodes = Nodes(redis, made[0], made[1], ca, tls, [])
        yield nodes
    finally:
        if nodes is not None:
            for client in nodes.opened:
                client.close()
        for relay in made:
            relay.stop()


@pytest.fixture
def nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(redis_server, tmp_path)


def _send(peer: MsrpClient, to_path: str, message_id: str, body: bytes) -> bytes:
    headers = [("Message-ID", message_id), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    headers.append(("Content-Type", "text/plain"))
    return peer.request("SEND", to_path, headers, body)


def _peers_on_both_workers(nodes: Nodes) -> list[MsrpClient]:
    """Two peers on node 1, one on each worker (the kernel picks a TLS connection's worker,
    and TLS connections are not balanced: connect until each worker has one)."""
    workers = {p.pid for p in nodes.n1.workers() if "worker" in title(p)}
    kept: dict[int, MsrpClient] = {}
    for _ in range(40):
        if len(kept) == len(workers):
            break
        peer = MsrpClient(nodes.n1.tls_port or 0, tls=nodes.tls, timeout=10)
        pid = _worker_of(nodes.n1, peer)
        if pid in kept:
            peer.close()
        else:
            kept[pid] = peer
            nodes.opened.append(peer)
    assert len(kept) == 2, "the kernel put 40 connections on one worker"
    return list(kept.values())


def test_frames_for_node_2s_token_sent_to_node_1_reach_bob_once_in_order(nodes: Nodes) -> None:
    bob, token = nodes.bob()
    peers = _peers_on_both_workers(nodes)
    count = 40
    sent: list[list[bytes]] = [[] for _ in peers]
    for n in range(count):
        for k, peer in enumerate(peers):
            body = b"frame %d of peer %d" % (n, k)
            sent[k].append(_send(peer, f"{nodes.at_n1(token)} {bob.uri}", f"p{k}m{n:03d}", body))
    got: list[list[str]] = [[] for _ in peers]
    for _ in range(count * len(peers)):
        frame = bob.recv().frame
        message_id = (frame.header("Message-ID") or b"").decode()
        k, n = int(message_id[1]), int(message_id[3:])
        got[k].append(message_id)
        assert frame.body is not None and bytes(frame.body) == b"frame %d of peer %d" % (n, k)
        assert frame.header("To-Path") == bob.uri.encode()
        # As if sent to node 2 directly: node 2's token, then the sender; node 1 is not there.
        assert frame.header("From-Path") == f"{bob.use_path} {peers[k].uri}".encode()
        bob.send_raw(build_reply(frame, 200, "OK"))
    for k, peer in enumerate(peers):
        assert got[k] == [f"p{k}m{n:03d}" for n in range(count)], f"peer {k} out of order"
        for tid in sent[k]:  # node 1's 200 to each, under the sender's own id, in order
            answer = peer.recv().frame
            assert (answer.tid, answer.code) == (tid, 200)
    for client in (bob, *peers):  # nothing twice, no REPORT (every SEND was answered 200)
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.5)
    n1, n2 = nodes.n1.counters(), nodes.n2.counters()
    assert n1["cluster_forwarded"] == count * len(peers)
    assert n1["cluster_lookups"] == 2  # one per worker: the rest from its cache
    assert n1["cluster_lookup_failures"] == 0
    assert n2["cluster_lookups"] == n2["cluster_forwarded"] == 0  # delivered as its own
    # each node took the other's certificate for a node's: node 2 the client certificate
    # node 1 presented, node 1 node 2's server certificate
    for node in (nodes.n1, nodes.n2):
        assert "a link with another node of the cluster: ('127.0.0.1'," in node.log()


def test_a_message_too_big_to_hold_crosses_whole_after_its_lookup(nodes: Nodes) -> None:
    """3 MiB, over max_body: node 1 routes it on its head, which waits for the lookup while
    the body keeps coming; then head and body go to node 2 and on to Bob, whole."""
    bob, token = nodes.bob()
    peer = nodes.client(nodes.n1)
    body = os.urandom(3 << 20)
    headers = [("Message-ID", "big"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    headers.append(("Content-Type", "application/octet-stream"))
    tid = new_tid()
    paths = [nodes.at_n1(token), bob.uri]
    data = build_request(tid, b"SEND", paths, [peer.uri], headers, body)
    writer = threading.Thread(target=peer.send_raw, args=(data,))
    writer.start()  # Bob reads meanwhile: flow control holds the writer
    got = bob.recv(timeout=30)
    writer.join(10)
    assert got.frame.header("Message-ID") == b"big"
    assert got.body == body
    bob.send_raw(build_reply(got.frame, 200, "OK"))
    answer = peer.recv().frame
    assert (answer.tid, answer.code) == (tid, 200)
    with pytest.raises(TimeoutError):
        peer.recv(timeout=0.5)
    assert nodes.n1.counters()["cluster_forwarded"] == 1


def test_a_path_naming_node_1_twice_forwards_once_the_node_is_known(nodes: Nodes) -> None:
    """Alice of node 1 sends to `<node1/A> <node1/B> <bob>`, B being node 2's: the inner hop
    through node 1 comes after her 200, so its first frame cannot wait for the lookup: a
    REPORT 481 (README). The lookup it started is kept: the next frame reaches Bob."""
    bob, token = nodes.bob()
    alice = nodes.client(nodes.n1)
    assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    to_path = f"{alice.use_path} {nodes.at_n1(token)} {bob.uri}"
    tid = _send(alice, to_path, "first", b"before node 1 knows")
    assert (alice.recv().frame.tid, 200) == (tid, 200)
    report = alice.recv().frame
    assert report.method == b"REPORT" and report.header("Message-ID") == b"first"
    assert report.header("Status") == b"000 481 Session Does Not Exist"
    time.sleep(0.2)  # the lookup lands
    tid = _send(alice, to_path, "second", b"once it knows")
    assert (alice.recv().frame.tid, 200) == (tid, 200)
    got = bob.recv().frame
    assert got.header("Message-ID") == b"second"
    assert got.header("From-Path") == f"{bob.use_path} {alice.use_path} {alice.uri}".encode()
    bob.send_raw(build_reply(got, 200, "OK"))
    for client in (alice, bob):
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.5)


def test_a_failure_at_node_2_comes_back_to_the_sender_as_a_report(nodes: Nodes) -> None:
    """Bob's session ends on node 2 while node 1 still knows his token there (its cache):
    node 2 answers 481, and node 1, which answered the sender 200, sends it a REPORT 481
    with its Message-ID, then one 408 when node 2 cannot be reached at all."""
    bob, token = nodes.bob()
    peer = nodes.client(nodes.n1)
    to_path = f"{nodes.at_n1(token)} {bob.uri}"
    tid = _send(peer, to_path, "first", b"to a live session")
    assert bob.recv().frame.header("Message-ID") == b"first"
    assert (peer.recv().frame.tid, 200) == (tid, 200)
    bob.close()
    time.sleep(0.3)  # node 2 forgets the token when the connection closes
    tid = _send(peer, to_path, "gone", b"to an ended session")
    answer = peer.recv().frame
    assert (answer.tid, answer.code) == (tid, 200)
    report = peer.recv().frame
    assert report.method == b"REPORT"
    assert report.header("Message-ID") == b"gone"
    assert report.header("Status") == b"000 481 Session Does Not Exist"
    assert report.header("To-Path") == peer.uri.encode()
    nodes.n2.stop()
    tid = _send(peer, to_path, "down", b"to a node that is gone")
    assert (peer.recv().frame.tid, 200) == (tid, 200)
    report = peer.recv(timeout=15).frame
    assert report.method == b"REPORT" and report.header("Message-ID") == b"down"
    assert (report.header("Status") or b"").startswith(b"000 408")
    with pytest.raises(TimeoutError):
        peer.recv(timeout=0.5)


def test_redis_down_gets_the_same_481_within_the_timeout(nodes: Nodes) -> None:
    bob, token = nodes.bob()
    peer = nodes.client(nodes.n1)
    unknown = _send(peer, f"{nodes.at_n1('nosuchtoken')} {bob.uri}", "m0", b"x")
    never = peer.recv().frame
    assert (never.tid, never.code) == (unknown, 481)
    nodes.redis.stop()
    started = time.monotonic()
    tid = _send(peer, f"{nodes.at_n1(token)} {bob.uri}", "m1", b"while Redis is down")
    answer = peer.recv(timeout=5).frame
    took = time.monotonic() - started
    assert (answer.tid, answer.code, answer.reason) == (tid, 481, never.reason)
    assert took < TIMEOUT + 0.5, took
    # the next one too, at once (the miss is kept for a second), and Bob got nothing
    tid = _send(peer, f"{nodes.at_n1(token)} {bob.uri}", "m2", b"again")
    assert (peer.recv(timeout=TIMEOUT).frame.tid, 481) == (tid, 481)
    with pytest.raises(TimeoutError):
        bob.recv(timeout=0.5)
    counters = nodes.n1.counters()
    assert counters["cluster_lookup_failures"] >= 1
    assert counters["cluster_forwarded"] == 0
    assert "cluster: a token lookup failed" in nodes.n1.log()


def test_a_stale_directory_never_sends_a_frame_back(nodes: Nodes) -> None:
    """The directory says node 1 holds token X (it does not): node 2 sends a frame for X to
    node 1 and keeps that answer. Then the directory says node 2: node 1 sends the next frame
    to node 2, which must not send it back on its stale answer. Each frame crosses once and
    its sender gets a REPORT 481 (the hop-by-hop 200 had gone out)."""
    with nodes.redis.client() as redis:
        redis.set("msrpd:sess:stale", "n1", ex=60)
    peer2, peer1 = nodes.client(nodes.n2), nodes.client(nodes.n1)
    far = "msrp://127.0.0.1:9/x;tcp"
    for peer, node, mid in ((peer2, nodes.n2, "a"), (peer1, nodes.n1, "b")):
        to_path = f"msrps://127.0.0.1:{node.tls_port}/stale;tcp {far}"
        tid = _send(peer, to_path, mid, b"for a session nobody holds")
        assert (peer.recv().frame.tid, 200) == (tid, 200)
        report = peer.recv().frame
        assert (report.header("Message-ID"), report.header("Status")) == (
            mid.encode(),
            b"000 481 Session Does Not Exist",
        )
        with nodes.redis.client() as redis:
            redis.set("msrpd:sess:stale", "n2", ex=60)
    n1, n2 = nodes.n1.counters(), nodes.n2.counters()
    assert (n1["cluster_forwarded"], n2["cluster_forwarded"]) == (1, 1)
    assert (n1["cluster_lookups"], n2["cluster_lookups"]) == (1, 1)
    for peer in (peer1, peer2):
        with pytest.raises(TimeoutError):
            peer.recv(timeout=0.5)


def test_node_1_reaches_only_the_node_whatever_the_frame_names(nodes: Nodes) -> None:
    """A peer who knows Bob's token reaches Bob and nobody else: the URI after the token is
    never dialled by node 1 (it goes on to node 2, which delivers by token), and a token no
    node holds opens no connection anywhere."""
    bob, token = nodes.bob()
    trap = socket.create_server(("127.0.0.1", free_port()))
    trap.settimeout(0.5)
    elsewhere = f"msrp://127.0.0.1:{trap.getsockname()[1]}/evil;tcp"
    try:
        peer = nodes.client(nodes.n1)
        tid = _send(peer, f"{nodes.at_n1(token)} {elsewhere}", "m0", b"only for Bob")
        assert (peer.recv().frame.tid, 200) == (tid, 200)
        got = bob.recv().frame
        assert got.header("Message-ID") == b"m0" and got.header("To-Path") == elsewhere.encode()
        tid = _send(peer, f"{nodes.at_n1('nobody')} {elsewhere}", "m1", b"for nobody")
        assert (peer.recv().frame.tid, 481) == (tid, 481)
        with pytest.raises(TimeoutError):
            trap.accept()
    finally:
        trap.close()


@pytest.fixture
def rated(redis_server: RedisServer, tmp_path: Path) -> Iterator[Nodes]:
    yield from two_nodes(redis_server, tmp_path, session_frame_rate=20, rate_burst=1)


def test_session_rates_hold_a_peer_but_not_a_node_link(rated: Nodes) -> None:
    """A node link carries many sessions: [limits] session rates are a client's, not its.
    A peer that is not a node, sending as fast to node 2 directly, is held to them; a peer
    presenting a certificate of another CA is refused at the handshake."""
    nodes = rated
    bob, token = nodes.bob()
    count = 60  # three times what 20 frames a second with a second of burst lets through

    def burst(node: Relay) -> None:
        peer = nodes.client(node)
        to_path = f"msrps://127.0.0.1:{node.tls_port}/{token};tcp {bob.uri}"
        for n in range(count):
            _send(peer, to_path, f"{node.tls_port}-{n}", b"rated")
        # Bob does not answer: his own 200s would be held to the rates too
        got = [bob.recv().frame.header("Message-ID") for _ in range(count)]
        assert got == [f"{node.tls_port}-{n}".encode() for n in range(count)]

    burst(nodes.n1)  # forwarded to node 2 over node 1's links
    n1, n2 = nodes.n1.counters(), nodes.n2.counters()
    assert n1["cluster_forwarded"] == count
    assert n1["limit_rate"] >= 1  # the peer, on node 1: held
    assert n2["limit_rate"] == 0  # the node link, on node 2: not held
    burst(nodes.n2)  # a peer on node 2 itself
    assert nodes.n2.counters()["limit_rate"] >= 1
    other = trustme.CA().issue_cert("localhost")
    context = ssl.create_default_context()
    nodes.ca.configure_trust(context)
    other.configure_cert(context)
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError, BrokenPipeError)):
        impostor = nodes.client(nodes.n2, context)
        impostor.request("SEND", f"{bob.use_path} {bob.uri}")
        impostor.recv(timeout=2)


def test_a_node_link_holds_no_session(nodes: Nodes) -> None:
    """A link from another node carries other clients' frames: an AUTH over it (here a client
    presenting a node's certificate; a peer's AUTH routed through node 1 arrives the same
    way) is refused 403 and no token is issued, so no frame can go out through the link as
    its owner (to an address the sender picked)."""
    link = ssl.create_default_context()
    nodes.ca.configure_trust(link)
    nodes.ca.issue_cert("localhost", "127.0.0.1").configure_cert(link)
    as_node = nodes.client(nodes.n2, link)
    wait_for(lambda: "a link with another node" in nodes.n2.log(), what="the node link")
    refused = as_node.auth("alice", PASSWORDS["alice"], REALM).frame
    assert (refused.code, refused.reason) == (403, b"Forbidden (no session on a node link)")
    # The link still relays: a peer's frame for Bob's token through it reaches Bob.
    bob, token = nodes.bob()
    tid = _send(
        as_node, f"msrps://127.0.0.1:{nodes.n2.tls_port}/{token};tcp {bob.uri}", "m1", b"hi"
    )
    answer = as_node.recv(timeout=10).frame
    assert (answer.tid, answer.code) == (tid, 200), answer.buf[:200]
    assert bob.recv(timeout=10).body == b"hi"
    with nodes.redis.client() as redis:  # Bob's token alone: none for the link
        assert sorted(redis.scan_iter("msrpd:sess:*")) == [f"msrpd:sess:{token}"]
