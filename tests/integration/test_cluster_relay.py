"""Two msrpd nodes on the default relay route, each naming its own TLS address in Use-Path
(issue 17): Alice AUTHs on node 1, Bob on node 2, and Alice's SENDs to `<node1/A> <node2/B>
<bob>` go node 1 -> node 2 over msrps (node 1 checks node 2's certificate against `[tls] ca`)
-> Bob (RFC 4976 §6.4: outbound on node 1, inbound on node 2). What `scripts/bench cluster`
loads; sessions on both of a node's workers keep their order though each worker dials the
next node; and a node that cannot verify the next node's certificate sends it nothing. No
Redis: forwarding by Use-Path needs no shared state."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trustme

from msrpd.protocol.writer import build_reply, build_request

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, wait_for

Nodes = tuple[Relay, Relay, ssl.SSLContext]


@pytest.fixture
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nodes]:
    """Two nodes sharing one certificate; `[tls] ca` names its CA unless the test is
    parametrized with False."""
    trust = getattr(request, "param", True)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    tls = {"certificate": str(cert_file), "private_key": str(key_file)}
    if trust:
        tls["ca"] = str(ca_file)
    made: list[Relay] = []
    try:
        for _ in range(2):
            relay = Relay(children=2, tls=tls, msrp={"route": None})
            made.append(relay)
            relay.sections["msrp"]["use_path_addr"] = f"127.0.0.1:{relay.tls_port}"
            relay.write_config()
            result = relay.start()
            assert result.returncode == 0, result.stderr + relay.log()
        context = ssl.create_default_context()
        ca.configure_trust(context)
        yield made[0], made[1], context
    finally:
        for relay in made:
            relay.stop()


def _client(relay: Relay, context: ssl.SSLContext, user: str) -> MsrpClient:
    assert relay.tls_port is not None
    client = MsrpClient(relay.tls_port, tls=context, timeout=10)
    reply = client.auth(user, PASSWORDS[user], REALM)
    assert reply.frame.code == 200, reply.frame.buf
    assert client.use_path is not None
    assert client.use_path.startswith(f"msrps://127.0.0.1:{relay.tls_port}/")
    return client


def _send(alice: MsrpClient, bob: MsrpClient, body: bytes, message_id: str) -> bytes:
    to_path = f"{alice.use_path} {bob.use_path} {bob.uri}"
    headers = [("Message-ID", message_id), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    headers.append(("Content-Type", "text/plain"))
    return alice.request("SEND", to_path, headers, body)


def test_a_send_crosses_from_alices_node_to_bobs_over_tls(nodes: Nodes) -> None:
    node1, node2, context = nodes
    with _client(node1, context, "alice") as alice, _client(node2, context, "bob") as bob:
        bodies = [b"hello %d across nodes" % n for n in range(5)]
        tids = [_send(alice, bob, body, f"m{n}") for n, body in enumerate(bodies)]
        for n, tid in enumerate(tids):
            answer = alice.recv().frame
            assert (answer.tid, answer.code) == (tid, 200)  # node 1's hop-by-hop 200, in order
            got = bob.recv()
            assert got.frame.method == b"SEND"
            assert got.body == bodies[n]
            assert got.frame.header("Message-ID") == f"m{n}".encode()
            assert got.frame.header("To-Path") == bob.uri.encode()
            # node 2, node 1 (as Alice's token), Alice: the frame came the way it was sent
            hops = (got.frame.header("From-Path") or b"").decode().split()
            assert hops[1:] == [str(alice.use_path), alice.uri]
            assert hops[0].startswith(f"msrps://127.0.0.1:{node2.tls_port}/")
            bob.send_raw(build_reply(got.frame, 200, "OK"))  # node 2 waits for it
        # every frame arrived once; Alice had her five 200s, then nothing (Bob answered all)
        for client in (bob, alice):
            with pytest.raises(TimeoutError):
                client.recv(timeout=0.5)
        # node 1's workers dialled node 2's TLS port: the hop between the nodes
        dialled = [
            c
            for pid in node1.worker_pids()
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == node2.tls_port
        ]
        assert dialled


@pytest.mark.parametrize("nodes", [False], indirect=True)
def test_a_node_that_cannot_verify_the_next_nodes_certificate_sends_nothing(
    nodes: Nodes,
) -> None:
    """Without `[tls] ca` node 1 checks node 2 against the system's trust store, which does not
    hold this test's CA: the connection is refused, Bob gets nothing, Alice her 200 and then
    a failure REPORT (RFC 4975 §7.1.2), and node 1 logs why."""
    node1, node2, context = nodes
    with _client(node1, context, "alice") as alice, _client(node2, context, "bob") as bob:
        tid = _send(alice, bob, b"not for an unverified peer", "m0")
        answer = alice.recv().frame
        assert (answer.tid, answer.code) == (tid, 200)
        report = alice.recv().frame
        assert report.method == b"REPORT"
        assert report.header("Message-ID") == b"m0"
        assert (report.header("Status") or b"").startswith(b"000 4")
        with pytest.raises(TimeoutError):
            bob.recv(timeout=0.5)
        wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in node1.log(), what="the log line")


def _worker_of(relay: Relay, client: MsrpClient) -> int:
    """The pid of the worker of `relay` that holds `client`'s connection."""
    port = client.sock.getsockname()[1]
    for pid in relay.worker_pids():
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.raddr and c.raddr.port == port:
                return pid
    raise AssertionError(f"no worker holds port {port}")


def _on_both_workers(relay: Relay, context: ssl.SSLContext, count: int) -> list[MsrpClient]:
    """`count` Alices, half on each of `relay`'s two workers. The kernel picks the worker of
    a TLS connection (SO_REUSEPORT hash) and TLS connections are not balanced, so connect
    until each worker holds its half, closing the surplus."""
    kept: dict[int, list[MsrpClient]] = {pid: [] for pid in relay.worker_pids()}
    for _ in range(20 * count):
        if all(len(clients) == count // 2 for clients in kept.values()):
            break
        alice = _client(relay, context, "alice")
        clients = kept[_worker_of(relay, alice)]
        if len(clients) < count // 2:
            clients.append(alice)
        else:
            alice.close()
    alices = [alice for clients in kept.values() for alice in clients]
    if len(alices) < count:
        for alice in alices:
            alice.close()
        raise AssertionError(f"the kernel put {20 * count} connections on one worker")
    return alices


def test_sessions_on_two_workers_keep_their_order_across_nodes(nodes: Nodes) -> None:
    """Alices on both of node 1's workers start at once: each worker dials node 2 (two
    connections between the nodes). Every session's SENDs must still go out over one of them,
    so each Bob gets his Alice's frames in the order she sent them (RFC 4976 §3: a relay
    sends chunks on in order; they may not overtake each other across connections)."""
    node1, node2, context = nodes
    count, burst = 4, 300
    alices = _on_both_workers(node1, context, count)
    bobs = [_client(node2, context, "bob") for _ in range(count)]
    try:
        body = b"x" * 4096
        bursts = []
        for alice, bob in zip(alices, bobs, strict=True):
            to_path = [str(alice.use_path), str(bob.use_path), bob.uri]
            frames = []
            for n in range(burst):
                headers = [("Message-ID", f"m{n:05d}"), ("Byte-Range", "1-4096/4096")]
                frames.append(
                    build_request(new_tid(), b"SEND", to_path, [alice.uri], headers, body)
                )
            bursts.append(b"".join(frames))
        # from threads, all at once; Bobs read meanwhile (flow control may hold a writer)
        writers = [
            threading.Thread(target=alice.send_raw, args=(data,))
            for alice, data in zip(alices, bursts, strict=True)
        ]
        for writer in writers:
            writer.start()
        for k, bob in enumerate(bobs):
            got = []
            for _ in range(burst):
                frame = bob.recv().frame
                got.append((frame.header("Message-ID") or b"").decode())
                bob.send_raw(build_reply(frame, 200, "OK"))
            assert got == [f"m{n:05d}" for n in range(burst)], f"pair {k} out of order"
        for writer in writers:
            writer.join(10)
        # Whether both workers dialled node 2 (two links) depends on timing: a worker that
        # needs node 2 after the other's connection is up takes that one (delivery.py). Most
        # runs have two (before the fix they reordered in 3 runs of 3); the order is checked
        # either way.
        links = [
            c
            for pid in node1.worker_pids()
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == node2.tls_port
        ]
        print(f"connections from node 1 to node 2: {len(links)}")
    finally:
        for client in (*alices, *bobs):
            client.close()
