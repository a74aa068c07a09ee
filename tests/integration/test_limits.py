"""[limits] (issue 14 item 3; rfc-checklist §3.7, §4.4, §5.5, cases 11 and 30a) against a real
msrpd: two workers, real sockets on 127.0.0.1 (and 127.0.0.2 for "another address"), the
Kamailio cmap route (the limits hold whatever route runs). Each case checks what the client
over the limit gets (a close or a response), the counter in stats.get, and that other
connections, addresses and users go on as before."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from msrpd.protocol import digest as dg

from ..msrpclient import MsrpClient
from .relay import CMAP_ROUTE, PASSWORDS, REALM, Relay, free_port, wait_for

T = TypeVar("T", socket.socket, MsrpClient)
OTHER_ADDR = "127.0.0.2"  # all of 127/8 is loopback on Linux: a second source address
_OPENED: list[socket.socket | MsrpClient] = []


@pytest.fixture(autouse=True)
def _close_sockets(make_relay) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every socket a test opened is closed after it (a closed one again, harmlessly), before
    its relay stops (the fixture it depends on ends after it): a stop waits drain_timeout for
    an open TLS connection."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def _relay(make_relay, msrp: dict[str, object] | None = None, **limits: object) -> Relay:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, msrp=msrp or {}, limits=limits)
    assert relay.start().returncode == 0, relay.log()
    return relay


def _stats(relay: Relay) -> dict[str, int]:
    out = relay.cli("ctl", "--json", "stats.get", "limit_")
    assert out.returncode == 0, out.stderr
    return {k: int(v) for k, v in json.loads(out.stdout)["total"].items()}


def _count(relay: Relay, name: str, n: int) -> None:
    """Counter `name` reaches `n` (workers publish once a second) and no more."""
    if n == 0:
        time.sleep(1.2)  # a publish has happened since
    wait_for(lambda: _stats(relay)[name] >= n, 5, f"{name} = {n}")
    assert _stats(relay)[name] == n


def _scrape(port: int) -> dict[str, float]:
    """The Prometheus samples, summed over the workers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "worker")
            key = f"{s.name}{{{labels}}}" if labels else s.name
            samples[key] = samples.get(key, 0.0) + s.value
    return samples


def _conns(relay: Relay) -> list[dict[str, object]]:
    out = relay.cli("ctl", "--json", "msrp.conns")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def _connect(relay: Relay, source: str = "127.0.0.1") -> socket.socket:
    return _kept(
        socket.create_connection(("127.0.0.1", relay.port), timeout=10, source_address=(source, 0))
    )


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the relay closed `sock` (having sent nothing), or None if still open."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return None
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - started


def _kept(sock: T) -> T:
    _OPENED.append(sock)
    return sock


def _client(relay: Relay, source: str = "127.0.0.1") -> MsrpClient:
    return _kept(MsrpClient(relay.port, timeout=10, source=source))


def _authed(relay: Relay, user: str, source: str = "127.0.0.1") -> MsrpClient:
    client = _client(relay, source)
    reply = client.auth(user, PASSWORDS[user], REALM)
    assert reply.frame.code == 200, reply.frame.buf
    return client


def _exchange(sender: MsrpClient, receiver: MsrpClient, body: bytes) -> None:
    """A SEND through the relay: 200 to the sender, the same body to the receiver."""
    tid = sender.send_message(receiver, body, "m-" + body.decode())
    answer = sender.recv()
    assert (answer.frame.tid, answer.frame.code) == (tid, 200)
    got = receiver.recv()
    assert (got.frame.method, got.body) == (b"SEND", body)


def _wrong_auth(client: MsrpClient, user: str = "alice") -> bytes:
    """An AUTH with a wrong password: the WWW-Authenticate of the 401 it gets."""
    client.request("AUTH", client.relay_uri)
    challenge = client.recv().frame
    assert challenge.code == 401
    nonce = re.search(r'nonce="([^"]+)"', (challenge.header("WWW-Authenticate") or b"").decode())
    assert nonce
    creds = dg.Credentials(user, REALM, nonce[1], client.relay_uri, "", "auth", "00000001", "c0")
    response = dg.response_for(creds, dg.ha1(user, REALM, "wrong"), "AUTH")
    value = (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce[1]}", '
        f'uri="{client.relay_uri}", response="{response}", qop=auth, nc=00000001, cnonce="c0"'
    )
    client.request("AUTH", client.relay_uri, [("Authorization", value)])
    failed = client.recv().frame
    assert failed.code == 401, failed.buf
    return failed.header("WWW-Authenticate") or b""


# -- probation (case 30a) ----------------------------------------------------------------------


def test_a_silent_connection_is_closed_at_probation(make_relay) -> None:
    """Checklist case 30a with probation = 2 s: a connection that sends nothing is closed 2 to
    3 s after its accept (checked once a second); an authenticated one and one that had a
    frame relayed through a token (a client without a relay sending to Alice's session) stay
    open, and so does a connection the relay opened to a next hop."""
    relay = _relay(make_relay, probation=2.0)
    alice = _authed(relay, "alice")
    silent = _connect(relay)
    proven = _client(relay)
    started = time.monotonic()
    _exchange(proven, alice, b"hello-alice")  # relayed through Alice's token
    assert _closed_within(silent, 6) is not None, "a silent connection outlived its probation"
    took = time.monotonic() - started
    assert 2.0 - 0.3 < took < 3.0 + 1.0, took  # 2 s after accept, checked once a second
    time.sleep(1.5)  # past the probation of the others too
    _exchange(proven, alice, b"again")
    _count(relay, "limit_probation", 1)
    assert "no AUTH and nothing relayed within probation" in relay.log()


def _tls_relay(
    make_relay, tmp_path: Path, msrp: dict[str, object], **limits: object
) -> tuple[Relay, ssl.SSLContext]:  # type: ignore[no-untyped-def]
    """A relay listening on TLS too, and a client context that trusts its certificate."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    relay: Relay = make_relay(
        children=2,
        msrp=msrp,
        tls={"certificate": str(cert_file), "private_key": str(key_file)},
        limits=limits,
    )
    assert relay.start().returncode == 0, relay.log()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return relay, context


def test_a_silent_tls_connection_is_closed_at_probation(make_relay, tmp_path) -> None:
    """Case 30a over TLS: a connection that never starts its handshake, and one that
    completes it and then sends nothing, are both closed about probation after the accept."""
    relay, context = _tls_relay(make_relay, tmp_path, {}, probation=2.0)
    started = time.monotonic()
    no_handshake = _kept(socket.create_connection(("127.0.0.1", relay.tls_port), timeout=10))
    silent = _kept(
        context.wrap_socket(
            socket.create_connection(("127.0.0.1", relay.tls_port), timeout=10),
            server_hostname="localhost",
        )
    )
    assert _closed_within(no_handshake, 6) is not None
    assert 2.0 - 0.3 < time.monotonic() - started < 3.0 + 1.0
    assert _closed_within(silent, 6) is not None
    assert 2.0 - 0.3 < time.monotonic() - started < 3.0 + 1.0
    _count(relay, "limit_probation", 1)  # the handshake timeout is asyncio's, not counted


def test_a_proven_connection_stays_proven_when_a_reload_moves_it(make_relay) -> None:
    """A reload hands every connection to the new generation: the one a frame was relayed
    through a token from is still off probation there, past the probation time; a silent
    one is still on it, counted from its first accept, and is closed."""
    relay = _relay(make_relay, probation=4.0)
    alice, proven = _authed(relay, "alice"), _client(relay)
    _exchange(proven, alice, b"before")
    silent = _connect(relay)
    opened = time.monotonic()
    old = relay.worker_pids()
    assert relay.cli("reload").returncode == 0
    wait_for(lambda: not (old & relay.worker_pids()), 20, "the old generation gone")
    assert time.monotonic() - opened < 3.5, "the reload took too long for this test"
    assert _closed_within(silent, 6) is not None
    assert 4.0 - 0.3 < time.monotonic() - opened < 5.0 + 1.0
    _exchange(proven, alice, b"after")
    _count(relay, "limit_probation", 1)


def test_an_unauthenticated_client_that_only_fails_is_closed_at_probation(make_relay) -> None:
    """Frames that are answered but relayed through no token (481: no such session) do not end
    probation: only a session or a relayed frame does."""
    relay = _relay(make_relay, probation=2.0)
    client = _client(relay)
    started = time.monotonic()
    for _ in range(3):
        client.request("SEND", f"msrp://127.0.0.1:{relay.port}/nosuchsession;tcp {client.uri}")
        assert client.recv().frame.code == 481
        time.sleep(0.5)
    with pytest.raises(EOFError):
        client.recv(timeout=4)
    assert time.monotonic() - started < 2.0 + 1.0 + 1.0
    _count(relay, "limit_probation", 1)


# -- connections per address, unauthenticated connections ----------------------------------------


def test_connections_per_address_hold_over_both_workers(make_relay) -> None:
    relay = _relay(make_relay, max_conns_per_addr=3)
    clients = [_authed(relay, "alice"), _authed(relay, "bob"), _client(relay)]
    wait_for(lambda: len({c["pid"] for c in _conns(relay)}) == 2, 5, "connections on both workers")
    over = _connect(relay)
    assert _closed_within(over, 3) is not None, "a fourth connection from 127.0.0.1 was served"
    _count(relay, "limit_addr_conns", 1)
    # Another address is not affected, nor are the open connections.
    other = _authed(relay, "alice", OTHER_ADDR)
    _exchange(other, clients[1], b"from-another-address")
    _exchange(clients[0], clients[1], b"still-served")
    # A closed connection gives its place back.
    clients[2].close()
    time.sleep(0.3)
    again = _authed(relay, "bob")
    _exchange(again, clients[0], b"after-a-close")
    _count(relay, "limit_addr_conns", 1)


def test_a_dead_workers_connections_give_their_places_back(make_relay) -> None:
    """Both workers are killed (SIGKILL) with the address's connections: the supervisor gives
    the counts back when it reaps them, so the address can connect again, up to its limit."""
    relay = _relay(make_relay, max_conns_per_addr=2)
    first = [_authed(relay, "alice"), _authed(relay, "bob")]
    assert _closed_within(_connect(relay), 3) is not None
    old = relay.worker_pids()
    for proc in relay.workers():
        proc.kill()
    wait_for(lambda: len(relay.worker_pids() - old) == 2, 15, "two new workers")
    for client in first:
        with pytest.raises((EOFError, OSError)):
            client.recv(timeout=3)
    time.sleep(1.0)  # the new workers accept
    again = [_authed(relay, "alice"), _authed(relay, "bob")]
    _exchange(again[0], again[1], b"after-the-kill")
    assert _closed_within(_connect(relay), 3) is not None  # the limit still holds


def test_unauthenticated_connections_over_the_workers_shares_are_closed(make_relay) -> None:
    """max_unauth_conns = 2 over two workers: one each. A third connection on probation is
    closed at accept; authenticated clients are not counted and go on."""
    relay = _relay(make_relay, max_unauth_conns=2)
    alice, bob = _authed(relay, "alice"), _authed(relay, "bob")
    waiting = [_connect(relay), _connect(relay)]
    wait_for(lambda: len(_conns(relay)) == 4, 5, "four connections")
    over = _connect(relay)
    assert _closed_within(over, 3) is not None
    _count(relay, "limit_unauth_conns", 1)
    _exchange(alice, bob, b"authenticated-ones-go-on")
    for sock in waiting:
        assert _closed_within(sock, 0.2) is None  # still open
        sock.close()
    time.sleep(0.3)
    late = _authed(relay, "alice")  # on probation until its AUTH: the shares are free again
    _exchange(late, bob, b"late")


# -- AUTH failures (case 11) and bans -----------------------------------------------------------


def test_the_third_wrong_password_closes_the_connection(make_relay) -> None:
    """Case 11a: three 401s without stale, then the connection closes (after the third 401 is
    written). Another connection of the same address is not affected."""
    relay = _relay(make_relay)  # the defaults: auth_failures_close = 3, ban_after = 10
    bystander = _authed(relay, "bob")
    client = _client(relay)
    for _ in range(3):
        assert b"stale" not in _wrong_auth(client)
    with pytest.raises(EOFError):
        client.recv(timeout=3)
    _count(relay, "limit_auth_failures", 1)
    _count(relay, "limit_bans", 0)
    alice = _authed(relay, "alice")
    _exchange(alice, bystander, b"not-banned")


def test_the_third_wrong_password_closes_it_under_the_relay_route(make_relay, tmp_path) -> None:
    """Case 11a with the default relay route (AUTH over TLS, answered by t_reply): the same
    hook, whatever route runs."""
    relay, context = _tls_relay(make_relay, tmp_path, {"route": None})
    client = _kept(MsrpClient(relay.tls_port, tls=context, timeout=10))
    for _ in range(3):
        assert b"stale" not in _wrong_auth(client)
    with pytest.raises(EOFError):
        client.recv(timeout=3)
    _count(relay, "limit_auth_failures", 1)
    alice = _kept(MsrpClient(relay.tls_port, tls=context, timeout=10))
    assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200


def test_stale_nonces_are_not_failures(make_relay) -> None:
    """Case 11b by a replayed nonce count (answered as a stale nonce, stale=true): five of them
    on one connection neither close it nor count."""
    relay = _relay(make_relay, auth_failures_close=2)
    client = _client(relay)
    client.request("AUTH", client.relay_uri)
    nonce = re.search(
        r'nonce="([^"]+)"', (client.recv().frame.header("WWW-Authenticate") or b"").decode()
    )
    assert nonce
    creds = dg.Credentials("alice", REALM, nonce[1], client.relay_uri, "", "auth", "00000001", "c")
    response = dg.response_for(creds, dg.ha1("alice", REALM, PASSWORDS["alice"]), "AUTH")
    value = (
        f'Digest username="alice", realm="{REALM}", nonce="{nonce[1]}", '
        f'uri="{client.relay_uri}", response="{response}", qop=auth, nc=00000001, cnonce="c"'
    )
    client.request("AUTH", client.relay_uri, [("Authorization", value)])
    assert client.recv().frame.code == 200
    for _ in range(5):
        client.request("AUTH", client.relay_uri, [("Authorization", value)])
        replayed = client.recv().frame
        assert replayed.code == 401
        assert b"stale=true" in (replayed.header("WWW-Authenticate") or b"")
    client.request("AUTH", client.relay_uri)
    assert client.recv().frame.code == 401  # still open
    _count(relay, "limit_auth_failures", 0)


def test_repeated_failures_ban_the_address_on_every_worker(make_relay) -> None:
    """Two connections fail twice each (auth_failures_close = 2): the fourth failure bans the
    address on both workers for ban_time; the counters show in stats.get and Prometheus."""
    metrics = free_port()
    relay: Relay = make_relay(
        children=2,
        msrp={"route": CMAP_ROUTE},
        # ban_time long enough to outlast the counters' publication on a loaded machine
        # (the ban begins before _count sees it): the refused connections below come within it.
        limits={"auth_failures_close": 2, "ban_after": 4, "ban_window": 30.0, "ban_time": 8.0},
    )
    relay.sections["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
    relay.write_config()
    assert relay.start().returncode == 0, relay.log()
    bystander = _authed(relay, "bob")  # connected before the ban: not closed by it
    for _ in range(2):
        client = _client(relay)
        _wrong_auth(client)
        _wrong_auth(client)
        with pytest.raises(EOFError):
            client.recv(timeout=3)
    _count(relay, "limit_bans", 1)
    banned_at = time.monotonic()
    refused = [_connect(relay) for _ in range(4)]  # both workers refuse them
    for sock in refused:
        assert _closed_within(sock, 3) is not None
    _count(relay, "limit_banned", 4)
    prometheus = _scrape(metrics)
    assert prometheus['msrpd_limited_total{limit="banned"}'] == 4
    assert prometheus['msrpd_limited_total{limit="auth_failures_close"}'] == 2
    assert prometheus["msrpd_bans_total"] == 1
    assert prometheus['msrpd_limited_total{limit="max_conns_per_addr"}'] == 0
    # Another address still gets in, and the open connection is served.
    other = _authed(relay, "alice", OTHER_ADDR)
    _exchange(other, bystander, b"banned-address-bystander")
    # The ban ends after ban_time.
    time.sleep(max(0.0, banned_at + 8.5 - time.monotonic()))
    again = _authed(relay, "alice")
    _exchange(again, bystander, b"ban-over")
    _count(relay, "limit_banned", 4)


# -- sessions per user ---------------------------------------------------------------------------


def test_sessions_per_user_hold_over_both_workers(make_relay) -> None:
    relay = _relay(make_relay, {"auth_min_expires": 1}, max_sessions_per_user=2)
    first, second = _authed(relay, "alice"), _authed(relay, "alice")
    wait_for(lambda: len({c["pid"] for c in _conns(relay)}) == 2, 5, "alice on both workers")
    third = _client(relay)
    refused = third.auth("alice", PASSWORDS["alice"], REALM).frame
    assert refused.code == 403
    assert b"too many sessions" in refused.buf.split(b"\r\n", 1)[0]
    assert refused.header("Use-Path") is None
    _count(relay, "limit_user_sessions", 1)
    bob = _authed(relay, "bob")  # another user is not affected
    _exchange(bob, first, b"to-alice-1")
    _exchange(bob, second, b"to-alice-2")
    # A session ends with its connection: the place is free again.
    first.close()
    time.sleep(0.3)
    assert third.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    _exchange(bob, third, b"to-alice-3")
    # ...and when it expires.
    short = third.auth("alice", PASSWORDS["alice"], REALM, expires=1)
    assert short.frame.code == 403  # second and third hold the two places
    fourth = _client(relay)
    second.close()
    time.sleep(0.3)
    assert fourth.auth("alice", PASSWORDS["alice"], REALM, expires=1).frame.code == 200
    time.sleep(1.5)
    assert third.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    _count(relay, "limit_user_sessions", 2)


# -- outbound connects ---------------------------------------------------------------------------


def test_outbound_connects_over_the_rate_fail_as_unreachable(make_relay) -> None:
    """max_outbound_per_second = 1 over two workers (0.5 a second each, bursts of 1): of five
    SENDs to five next hops at once, the first is delivered and each of the others gets its
    sender a REPORT 408, as a refused connect does; the next hops see no connection."""
    relay = _relay(make_relay, max_outbound_per_second=1.0)
    hops = [_kept(socket.create_server(("127.0.0.1", 0))) for _ in range(5)]
    alice = _authed(relay, "alice")
    tids = []
    for i, hop in enumerate(hops):
        port = hop.getsockname()[1]
        to = (
            f"msrp://127.0.0.1:{relay.port}/x;tcp msrp://127.0.0.1:{port}/h{i};tcp msrp://b:1/b;tcp"
        )
        headers = [("Message-ID", f"m{i}"), ("Byte-Range", "1-2/2"), ("Content-Type", "text/plain")]
        tids.append(alice.request("SEND", to, headers, b"hi"))
    answers = [alice.recv().frame for _ in range(9)]
    oks = [f.tid for f in answers if f.code == 200]
    reports = [f for f in answers if f.method == b"REPORT"]
    assert oks == tids
    assert sorted(r.header("Message-ID") for r in reports) == [b"m1", b"m2", b"m3", b"m4"]
    assert all(r.header("Status") == b"000 408 Request Timeout" for r in reports)
    hops[0].settimeout(5)
    conn = _kept(hops[0].accept()[0])
    conn.settimeout(5)
    assert b"MSRP " in conn.recv(4096)
    for hop in hops[1:]:
        hop.settimeout(0.2)
        with pytest.raises(TimeoutError):
            hop.accept()
    _count(relay, "limit_outbound", 4)
    time.sleep(2.5)  # the bucket refills: a connect is made again
    port = hops[1].getsockname()[1]
    to = f"msrp://127.0.0.1:{relay.port}/x;tcp msrp://127.0.0.1:{port}/h1;tcp msrp://b:1/b;tcp"
    headers = [("Message-ID", "m9"), ("Byte-Range", "1-2/2"), ("Content-Type", "text/plain")]
    alice.request("SEND", to, headers, b"hi")
    assert alice.recv().frame.code == 200
    hops[1].settimeout(5)
    _kept(hops[1].accept()[0])


# -- session rates -------------------------------------------------------------------------------


def test_a_sender_over_its_frame_rate_is_slowed_not_dropped(make_relay) -> None:
    """session_frame_rate = 50 with a 0.2 s burst (10 frames): 60 SENDs written at once take
    about a second to be read; every one is answered 200 and delivered once, in order, while
    another pair's SENDs meanwhile go at their own pace."""
    relay = _relay(make_relay, session_frame_rate=50.0, rate_burst=0.2)
    alice, bob = _authed(relay, "alice"), _authed(relay, "bob")
    alice2, bob2 = _authed(relay, "alice"), _authed(relay, "bob")
    started = time.monotonic()
    tids = [alice.send_message(bob, f"n{i}".encode(), f"m{i}") for i in range(60)]
    for i in range(5):
        _exchange(bob2, alice2, f"other-pair-{i}".encode())
    other_took = time.monotonic() - started
    answers = [alice.recv().frame for _ in range(60)]
    assert [f.tid for f in answers] == tids
    assert all(f.code == 200 for f in answers)
    got = [bob.recv().body for _ in range(60)]
    took = time.monotonic() - started
    assert got == [f"n{i}".encode() for i in range(60)]
    with pytest.raises(TimeoutError):
        bob.recv(timeout=0.3)  # once each
    assert (60 - 10) / 50 - 0.3 < took < 6.0, took
    assert other_took < took / 2, (other_took, took)  # not held back with Alice
    wait_for(lambda: _stats(relay)["limit_rate"] >= 1, 5, "limit_rate counted")


def test_a_sender_over_its_byte_rate_is_slowed_not_dropped(make_relay) -> None:
    relay = _relay(make_relay, session_byte_rate=200_000.0, rate_burst=0.1)
    alice, bob = _authed(relay, "alice"), _authed(relay, "bob")
    body = b"x" * 60_000
    started = time.monotonic()
    tids = [alice.send_message(bob, body, f"m{i}") for i in range(5)]
    assert [alice.recv().frame.tid for _ in range(5)] == tids
    got = [bob.recv(timeout=10).body for _ in range(5)]
    took = time.monotonic() - started
    assert got == [body] * 5
    # 300 kB at 200 kB/s after a 20 kB burst: about 1.4 s.
    assert 1.0 < took < 6.0, took
    wait_for(lambda: _stats(relay)["limit_rate"] >= 1, 5, "limit_rate counted")
