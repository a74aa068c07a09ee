"""A next hop that cannot be reached (issue 12 item 3): a listener whose accept queue is full
(connects hang until connect_timeout) or a closed port (refused at once).

A failed connect releases everything its connection held: the sender it paused reads again,
each frame parked there gets its sender a failure REPORT (Status 000 408, RFC 4976 §6.4.1),
the sender's close is seen, and `msrpd stop` does not wait for drain_timeout. Connects in
flight and bytes parked are bounded, and a failed next hop fails fast for a while instead of
being dialled again for every frame."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Callable

import pytest

from msrpd.protocol.writer import build_request
from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, free_port, wait_for

CONNECT_TIMEOUT = 2.0
BOUNDED_TIMEOUT = 5.0  # long enough to tell "failed at once" from "failed at the timeout"
END = "msrp://127.0.0.1:9/end;tcp"


def _full(n: int) -> tuple[list[int], list[socket.socket]]:
    """`n` ports of listeners whose accept queue is full: connects to them hang (SYNs are
    dropped), and the sockets to close afterwards."""
    socks: list[socket.socket] = []
    ports = []
    for _ in range(n):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        socks.append(srv)
        for _ in range(3):  # one completes into the queue, the others wait in SYN_SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(srv.getsockname())
            socks.append(filler)
        ports.append(srv.getsockname()[1])
    time.sleep(0.3)
    return ports, socks


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30.0)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def _send(client: MsrpClient, to_path: str, msgid: str, body: bytes) -> bytes:
    headers = [("Message-ID", msgid), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    return client.request("SEND", to_path, headers, body)


def _hop(relay: Relay, port: int) -> str:
    return f"msrp://127.0.0.1:{relay.port}/x;tcp msrp://127.0.0.1:{port}/dead;tcp {END}"


class Inbox:
    """What a client got, by Message-ID: 200s for its SENDs, and REPORTs with their Status."""

    def __init__(self, client: MsrpClient) -> None:
        self.client = client
        self.ok: Counter[bytes] = Counter()
        self.reports: dict[bytes, list[bytes]] = {}
        self.report_order: list[bytes] = []
        self.tids: dict[bytes, bytes] = {}

    def expect(self, tid: bytes, msgid: str) -> None:
        self.tids[tid] = msgid.encode()

    def read_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out: 200s {dict(self.ok)}, REPORTs {self.reports}"
            got = self.client.recv(left).frame
            if got.code is not None:
                assert got.code == 200, got.buf
                self.ok[self.tids[got.tid]] += 1
            else:
                assert got.method == b"REPORT", got.buf
                msgid = got.message_id or b""
                self.reports.setdefault(msgid, []).append(got.header("Status") or b"")
                self.report_order.append(msgid)


def _stats(relay: Relay) -> dict[str, int]:
    shm = layout_for(relay.settings()).attach_all()
    try:
        return dict(shm.stats.total())
    finally:
        shm.close()


def _relay(make_relay, children: int, **msrp: object) -> Relay:  # type: ignore[no-untyped-def]
    msrp = {"connect_timeout": CONNECT_TIMEOUT, **msrp}
    relay: Relay = make_relay(children=children, core={"drain_timeout": 20}, msrp=msrp)
    assert relay.start().returncode == 0, relay.log()
    return relay


def test_failed_connect_releases_the_sender(make_relay) -> None:
    """2 MiB of SENDs to a next hop that never answers the connect: the sender is paused (more
    than 1 MiB waits), then released when the connect fails; every SEND gets its 200 and one
    REPORT 408; her next SEND to a live session is answered and delivered; her close is seen;
    stop does not wait for drain_timeout."""
    relay = _relay(make_relay, 2)
    (port,), socks = _full(1)
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    inbox = Inbox(alice)
    body = bytes(64 * 1024)
    dead = [f"dead-{n}" for n in range(32)]
    for msgid in dead:
        inbox.expect(_send(alice, _hop(relay, port), msgid, body), msgid)
    started = time.monotonic()
    inbox.expect(alice.send_message(bob, b"still here", message_id="live"), "live")
    inbox.read_until(lambda: inbox.ok[b"live"] == 1, CONNECT_TIMEOUT + 10)
    print(f"the live SEND was answered after {time.monotonic() - started:.1f} s")
    got = bob.recv(5)
    assert (got.frame.method, got.body) == (b"SEND", b"still here")
    inbox.read_until(lambda: len(inbox.reports) == len(dead), 10)
    assert inbox.ok == Counter({m.encode(): 1 for m in [*dead, "live"]})
    assert inbox.reports == {m.encode(): [b"000 408 Request Timeout"] for m in dead}
    with pytest.raises(TimeoutError):
        alice.recv(0.5)
    with pytest.raises(TimeoutError):
        bob.recv(0.1)

    alice_port = alice.sock.getsockname()[1]
    alice.close()

    def alice_gone() -> bool:
        rows = json.loads(relay.cli("ctl", "--json", "msrp.conns").stdout)
        return not any(row["peer"].endswith(f":{alice_port}") for row in rows)

    wait_for(alice_gone, 10, "the relay to drop Alice's closed connection")
    wait_for(lambda: _stats(relay)["connects_failed"] == 1, 5, "the failed connect counted")
    assert _stats(relay)["connects_out"] == 1
    started = time.monotonic()
    assert relay.cli("stop", "--timeout", "30").returncode == 0
    assert time.monotonic() - started < 8, "stop waited for drain_timeout (20 s)"
    bob.close()
    for sock in socks:
        sock.close()


def test_a_refused_next_hop_is_not_dialled_for_every_frame(make_relay) -> None:
    """500 SENDs to a closed port: one connect, then the failure is remembered
    (connect_fail_ttl); every SEND still gets its 200 and one REPORT, and an AUTH a 408."""
    relay = _relay(make_relay, 1, connect_fail_ttl=60)
    port = free_port()
    with _authed(relay.port, "alice") as alice:
        inbox = Inbox(alice)
        msgids = [f"refused-{n}" for n in range(500)]
        for msgid in msgids:
            inbox.expect(_send(alice, _hop(relay, port), msgid, b"x" * 100), msgid)
        inbox.read_until(lambda: len(inbox.report_order) == len(msgids), 20)
        inbox.read_until(lambda: sum(inbox.ok.values()) == len(msgids), 5)
        assert inbox.ok == Counter({m.encode(): 1 for m in msgids})
        assert inbox.reports == {m.encode(): [b"000 408 Request Timeout"] for m in msgids}
        # An AUTH for that next hop is answered end to end: the relay answers it 408.
        tid = alice.request("AUTH", f"{alice.relay_uri} msrp://127.0.0.1:{port};tcp")
        got = alice.recv(5).frame
        assert (got.tid, got.code, got.to_path) == (tid, 408, [alice.uri])
        with pytest.raises(TimeoutError):
            alice.recv(0.5)
    attempts = relay.log().count(f"relay to tcp:127.0.0.1:{port} failed: cannot connect")
    assert attempts == 1, f"{attempts} connects to a port that refused the first"
    wait_for(lambda: _stats(relay)["connects_failed"] == 1, 5, "the failed connect counted")
    assert _stats(relay)["connects_out"] == 1


def test_connects_in_flight_and_parked_bytes_are_bounded(make_relay) -> None:
    """One worker, max_connects_per_conn 4, max_connects 6, max_connecting_bytes 600 KiB:
    Alice names 10 next hops that never answer (4 connects start), Carol 10 others (2 more:
    the worker's bound); the other frames fail at once with a REPORT, and Alice's SEND to a
    live session is answered at once. Dave's frames to a connecting hop wait until 600 KiB
    wait in this worker, then fail at once."""
    relay = _relay(
        make_relay,
        1,
        connect_timeout=BOUNDED_TIMEOUT,
        max_connects=6,
        max_connects_per_conn=4,
        max_connecting_bytes=600 * 1024,
    )
    ports, socks = _full(20)
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    carol, dave = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    inboxes = {name: Inbox(c) for name, c in [("alice", alice), ("carol", carol), ("dave", dave)]}
    started = time.monotonic()
    for n, port in enumerate(ports[:10]):
        inboxes["alice"].expect(_send(alice, _hop(relay, port), f"a{n}", b"a" * 100), f"a{n}")
    for n, port in enumerate(ports[10:]):
        inboxes["carol"].expect(_send(carol, _hop(relay, port), f"c{n}", b"c" * 100), f"c{n}")
    inboxes["alice"].expect(alice.send_message(bob, b"live", message_id="live"), "live")
    a, c = inboxes["alice"], inboxes["carol"]
    a.read_until(lambda: a.ok[b"live"] == 1 and len(a.reports) == 6, BOUNDED_TIMEOUT - 1)
    c.read_until(lambda: len(c.reports) == 8, BOUNDED_TIMEOUT - 1)
    assert time.monotonic() - started < BOUNDED_TIMEOUT, "the bounds did not fail them at once"
    assert sorted(a.reports) == [b"a%d" % n for n in range(4, 10)]
    assert sorted(c.reports) == [b"c%d" % n for n in range(2, 10)]
    assert bob.recv(5).body == b"live"
    # Dave: 400 KiB frames to Alice's first next hop, which is still connecting.
    d = inboxes["dave"]
    for n in range(3):
        d.expect(_send(dave, _hop(relay, ports[0]), f"d{n}", bytes(400 * 1024)), f"d{n}")
    d.read_until(lambda: len(d.reports) == 1, BOUNDED_TIMEOUT)
    assert d.report_order == [b"d2"], "the third frame over the bytes bound fails at once"
    # Then every connect times out: everything parked fails, with one REPORT each.
    for inbox, n in [(a, 10), (c, 10), (d, 3)]:
        inbox.read_until(lambda i=inbox, n=n: len(i.reports) == n, BOUNDED_TIMEOUT + 10)
        assert sum(inbox.ok.values()) == n + (inbox is a)
        assert all(s == [b"000 408 Request Timeout"] for s in inbox.reports.values())
    wait_for(lambda: _stats(relay)["connects_failed"] == 6, 5, "the failed connects counted")
    assert _stats(relay)["connects_out"] == 6
    for client in (alice, bob, carol, dave):
        client.close()
    for sock in socks:
        sock.close()


def test_connects_started_per_connection_are_rate_limited(make_relay) -> None:
    """Alice names 200 different closed ports as fast as she can, connect_rate 10: about 10
    connects start at once and 10 more each second, not one per frame; every SEND still gets
    its 200 and one REPORT (those over the rate at once). Bob, on another connection, is not
    held back by Alice's bucket: his next hop is dialled."""
    relay = _relay(make_relay, 1, connect_rate=10, max_connects_per_conn=100)
    ports = [free_port() for _ in range(200)]
    with _authed(relay.port, "alice") as alice, _authed(relay.port, "bob") as bob:
        inbox = Inbox(alice)
        started = time.monotonic()
        for n, port in enumerate(ports):
            inbox.expect(_send(alice, _hop(relay, port), f"r{n}", b"x" * 50), f"r{n}")
        inbox.read_until(lambda: len(inbox.reports) == len(ports), 20)
        inbox.read_until(lambda: sum(inbox.ok.values()) == len(ports), 5)
        took = time.monotonic() - started
        assert all(s == [b"000 408 Request Timeout"] for s in inbox.reports.values())
        # Counters are published once a second: wait until every connect is counted.
        wait_for(
            lambda: 10 <= _stats(relay)["connects_failed"] == _stats(relay)["connects_out"],
            5,
            "the connects counted",
        )
        out = _stats(relay)["connects_out"]
        assert out <= 10 + 10 * took + 1, f"{out} connects in {took:.2f} s at 10 a second"
        bobs = Inbox(bob)
        bobs.expect(_send(bob, _hop(relay, free_port()), "bob", b"y"), "bob")
        bobs.read_until(lambda: b"bob" in bobs.reports, 10)
        wait_for(lambda: _stats(relay)["connects_out"] == out + 1, 5, "Bob's next hop dialled")


def test_a_streamed_sends_report_follows_its_200(make_relay) -> None:
    """A 2 MiB SEND (streamed: over max_body) to a closed port: the connect fails while the
    body is still arriving, but the 200 is held until the end-line (RFC 4976 §6.4.1), and the
    failure REPORT about the same SEND must not overtake it: 200 first, then the REPORT."""
    relay = _relay(make_relay, 1)
    body = bytes(range(256)) * (8 * 1024)
    with _authed(relay.port, "alice") as alice:
        tid = b"streamed-report"
        headers = [("Message-ID", "big"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        frame = build_request(
            tid, b"SEND", _hop(relay, free_port()).split(), [alice.uri], headers, body
        )
        cut = len(frame) * 3 // 4  # past max_body (1 MiB): the head is routed, the connect starts
        alice.send_raw(frame[:cut])
        wait_for(lambda: _stats(relay)["connects_failed"] == 1, 5, "the connect failed")
        alice.send_raw(frame[cut:])
        first, second = alice.recv(10).frame, alice.recv(10).frame
        assert (first.tid, first.code) == (tid, 200)
        assert second.method == b"REPORT"
        assert (second.header("Message-ID"), second.header("Status")) == (
            b"big",
            b"000 408 Request Timeout",
        )


def test_a_tls_next_hop_that_never_answers_the_handshake_fails_at_connect_timeout(
    make_relay,
) -> None:
    """An msrps next hop that takes the TCP connection and then says nothing: the handshake
    has what is left of connect_timeout (not a second timeout of its own), then each waiting
    SEND gets its 200 and one REPORT 408, and the connect counts as failed."""
    relay = _relay(make_relay, 1)
    with socket.socket() as silent, _authed(relay.port, "alice") as alice:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the connects; nobody reads
        port = silent.getsockname()[1]
        hop = f"msrp://127.0.0.1:{relay.port}/x;tcp msrps://127.0.0.1:{port}/dead;tcp {END}"
        inbox = Inbox(alice)
        msgids = [f"silent-{n}" for n in range(5)]
        started = time.monotonic()
        for msgid in msgids:
            inbox.expect(_send(alice, hop, msgid, b"z" * 100), msgid)
        inbox.read_until(lambda: len(inbox.reports) == len(msgids), CONNECT_TIMEOUT + 10)
        took = time.monotonic() - started
        assert CONNECT_TIMEOUT - 0.2 < took < CONNECT_TIMEOUT * 1.5, took
        inbox.read_until(lambda: sum(inbox.ok.values()) == len(msgids), 5)
        assert inbox.ok == Counter({m.encode(): 1 for m in msgids})
        assert inbox.reports == {m.encode(): [b"000 408 Request Timeout"] for m in msgids}
        assert "TLS handshake timeout" in relay.log()
        wait_for(lambda: _stats(relay)["connects_failed"] == 1, 5, "the failed connect counted")
