"""Children, reload and stop with real traffic: AUTH, SEND relayed between real clients."""

from __future__ import annotations

import signal
import ssl
import threading
import time

import psutil
import pytest
import trustme

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, exited, wait_for


def authed(port: int, user: str, tls: ssl.SSLContext | None = None) -> MsrpClient:
    client = MsrpClient(port, tls=tls)
    final = client.auth(user, PASSWORDS[user], REALM)
    assert final.frame.code == 200, final.frame.buf
    return client


def exchange(alice: MsrpClient, bob: MsrpClient, body: bytes) -> None:
    """Alice sends `body` to Bob through the relay: Alice gets 200, Bob gets the body."""
    tid = alice.send_message(bob, body)
    ok = alice.recv()
    assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
    got = bob.recv()
    assert got.frame.method == b"SEND" and got.frame.tid == tid
    assert got.body == body
    assert got.frame.to_path == [bob.uri]
    assert got.frame.from_path[1:] == [alice.uri]


@pytest.mark.parametrize("children", [1, 2, 4])
def test_children_accept_and_relay(make_relay, children: int) -> None:
    relay: Relay = make_relay(children=children)
    assert relay.start().returncode == 0, relay.log()
    assert len(relay.worker_pids()) == children
    with authed(relay.port, "alice") as alice, authed(relay.port, "bob") as bob:
        for i in range(5):
            exchange(alice, bob, b"hello %d" % i)
            exchange(bob, alice, b"back %d" % i)


def _owner_pids(relay: Relay) -> dict[int, int]:
    """Established connections to the relay port per worker pid (from the kernel via psutil)."""
    owners: dict[int, int] = {}
    for proc in relay.workers():
        conns = proc.net_connections(kind="tcp")
        owners[proc.pid] = sum(
            1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == relay.port
        )
    return owners


def test_four_workers_share_forty_connections(make_relay) -> None:
    relay: Relay = make_relay(children=4)
    assert relay.start().returncode == 0
    clients = [MsrpClient(relay.port) for _ in range(40)]
    try:
        for c in clients:  # one round trip each: every connection has been accepted
            c.request("SEND", f"msrp://127.0.0.1:{relay.port}/nosuch;tcp")
            assert c.recv().frame.code == 481
        owners = _owner_pids(relay)
        assert sum(owners.values()) == 40
        assert sum(1 for n in owners.values() if n) > 1, owners
    finally:
        for c in clients:
            c.close()


def test_cross_worker_pairs_relay(make_relay) -> None:
    """With 4 workers, pairs land on different workers: every pair still relays both ways
    (the handoff link carries frames to the owning worker)."""
    relay: Relay = make_relay(children=4)
    assert relay.start().returncode == 0
    pairs = [(authed(relay.port, "alice"), authed(relay.port, "bob")) for _ in range(8)]
    try:
        for alice, bob in pairs:
            for i in range(3):
                exchange(alice, bob, b"x" * (i * 1000 + 1))
                exchange(bob, alice, b"y" * (i * 700 + 1))
        assert sum(1 for n in _owner_pids(relay).values() if n) > 1
    finally:
        for alice, bob in pairs:
            alice.close()
            bob.close()


def test_reload_keeps_authenticated_sessions(make_relay) -> None:
    """1. Alice and Bob authenticate. 2. HUP: a new generation starts, the old one hands
    their connections over and exits. 3. The old sessions still relay both ways; 4. a client
    connecting after the reload reaches Bob's pre-reload session (tests/integration/
    test_reload.py does this with 1,000 sessions, traffic and TLS)."""
    relay: Relay = make_relay(children=2, core={"drain_timeout": 30})
    assert relay.start().returncode == 0
    alice, bob = authed(relay.port, "alice"), authed(relay.port, "bob")
    old = relay.worker_pids()
    assert relay.cli("reload").returncode == 0
    wait_for(lambda: len(relay.worker_pids() - old) == 2, 10, "the new generation")
    wait_for(lambda: not (relay.worker_pids() & old), 10, "the old generation to exit")
    exchange(alice, bob, b"after reload")
    exchange(bob, alice, b"answer after reload")
    with authed(relay.port, "alice") as carol:
        exchange(carol, bob, b"new connection, old session")
    alice.close()
    bob.close()


def test_reload_with_broken_config_keeps_serving(make_relay) -> None:
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0
    before = relay.worker_pids()
    relay.sections["core"]["children"] = "many"
    relay.write_config()
    assert relay.cli("reload").returncode == 2  # the CLI checks first
    relay.supervisor().send_signal(1)  # SIGHUP straight to the supervisor
    wait_for(lambda: "reload refused" in relay.log(), 5, "the refusal in the log")
    assert relay.worker_pids() == before
    with authed(relay.port, "alice") as alice, authed(relay.port, "bob") as bob:
        exchange(alice, bob, b"still serving")


def test_reload_with_broken_route_keeps_serving(make_relay, tmp_path) -> None:
    script = tmp_path / "route.py"
    script.write_text("from msrpd.routing.routes.cmap import ksr_msrp_event  # noqa\n")
    relay: Relay = make_relay(children=1, msrp={"route": str(script)})
    assert relay.start().returncode == 0
    before = relay.worker_pids()
    script.write_text("def ksr_msrp_event(msrp):\n    1 +\n")
    relay.supervisor().send_signal(1)
    wait_for(lambda: "reload refused" in relay.log(), 5)
    assert f"{script}:2" in relay.log()
    assert relay.worker_pids() == before
    with authed(relay.port, "alice") as alice, authed(relay.port, "bob") as bob:
        exchange(alice, bob, b"old route serving")


def test_term_delivers_frames_in_flight(make_relay) -> None:
    """1. Bob stops reading; Alice sends 40 x 64 KiB (she blocks once the relay's buffers
    for Bob are full: back-pressure). 2. TERM. 3. Bob reads: all 40 arrive intact and in
    order, Alice gets her 40 200s, and only then does the relay close and exit."""
    relay: Relay = make_relay(children=1, core={"drain_timeout": 20})
    assert relay.start().returncode == 0
    alice, bob = authed(relay.port, "alice"), authed(relay.port, "bob")
    alice.sock.settimeout(30)
    bodies = [bytes([65 + i % 26]) * 65536 for i in range(40)]
    tids: list[bytes] = []

    def send_all() -> None:
        tids.extend(alice.send_message(bob, b, message_id=f"m{i}") for i, b in enumerate(bodies))

    sender = threading.Thread(target=send_all)
    sender.start()
    time.sleep(0.5)
    supervisor = relay.supervisor()
    supervisor.send_signal(signal.SIGTERM)
    received = [bob.recv(timeout=20) for _ in bodies]
    sender.join(20)
    assert [r.body for r in received] == bodies
    assert [r.frame.tid for r in received] == tids
    assert [alice.recv(timeout=20).frame.code for _ in tids] == [200] * len(tids)
    with pytest.raises((EOFError, ConnectionError)):
        bob.recv(timeout=20)
    wait_for(lambda: exited(supervisor), 20, "the supervisor to exit")  # reaped or not
    alice.close()
    bob.close()


def test_tls_auth_gets_msrps_use_path(make_relay, tmp_path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    relay: Relay = make_relay(
        children=2, tls={"certificate": str(cert_file), "private_key": str(key_file)}
    )
    assert relay.start().returncode == 0, relay.log()
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with authed(relay.tls_port, "alice", client_ctx) as alice:
        assert alice.use_path.startswith(f"msrps://127.0.0.1:{relay.tls_port}/")
        with authed(relay.tls_port, "bob", client_ctx) as bob:
            exchange(alice, bob, b"over tls")
        with authed(relay.port, "bob") as plain_bob:
            assert plain_bob.use_path.startswith("msrp://")
            exchange(alice, plain_bob, b"tls to tcp")
