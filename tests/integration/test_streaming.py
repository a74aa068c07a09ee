"""Frames of any size through a real relay: whole 1 MiB chunks, a 64 MiB message in 1 MiB
chunks, single frames far over the whole-frame limit (streamed in pieces), no interleaving
on a connection while a streamed frame is written, and bounded memory when Bob is slow."""

from __future__ import annotations

import hashlib
import threading
import time

import psutil

from msrpd.protocol.writer import build_request

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay

MIB = 1 << 20


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def _chunk(
    alice: MsrpClient, bob: MsrpClient, body: bytes, start: int, total: int, mid: str
) -> bytes:
    tid = new_tid()
    headers = [("Message-ID", mid), ("Byte-Range", f"{start}-{start + len(body) - 1}/{total}")]
    headers.append(("Content-Type", "application/octet-stream"))
    alice.send_raw(
        build_request(tid, b"SEND", [bob.use_path or "", bob.uri], [alice.uri], headers, body)
    )
    return tid


def _read_into(client: MsrpClient, count: int, out: list[bytes]) -> None:
    out.extend(client.recv(timeout=60).body for _ in range(count))


def _worker_of(relay: Relay, client: MsrpClient) -> int:
    port = client.sock.getsockname()[1]
    for proc in relay.workers():
        if any(c.raddr and c.raddr.port == port for c in proc.net_connections("tcp")):
            return proc.pid
    raise AssertionError(f"no worker holds the connection from port {port}")


def _pairs(relay: Relay, n: int) -> list[tuple[MsrpClient, MsrpClient]]:
    """Pairs whose two ends are on different workers when the kernel allows (cross-worker)."""
    return [(_authed(relay.port, "alice"), _authed(relay.port, "bob")) for _ in range(n)]


def test_large_messages_relay_intact(make_relay) -> None:
    """1. a 1 MiB body in one chunk; 2. a 64 MiB message in 64 chunks of 1 MiB; 3. one 24 MiB
    chunk (over the 1 MiB whole-frame limit: streamed); each through 2 workers, Bob reading
    as Alice sends; every byte arrives, in order, and every chunk gets its 200."""
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0
    for alice, bob in _pairs(relay, 2):
        plan = [(MIB, 1), (MIB, 64), (24 * MIB, 1)]
        for size, count in plan:
            total = size * count
            chunks = [bytes([i % 251]) * (size - 1) + b"\n" for i in range(count)]
            received: list[bytes] = []
            reader = threading.Thread(target=_read_into, args=(bob, count, received))
            reader.start()
            tids = [
                _chunk(alice, bob, c, i * size + 1, total, f"m{size}") for i, c in enumerate(chunks)
            ]
            reader.join(120)
            assert not reader.is_alive()
            assert (
                hashlib.sha256(b"".join(received)).digest()
                == hashlib.sha256(b"".join(chunks)).digest()
            )
            oks = [alice.recv(timeout=30).frame for _ in tids]
            assert [(f.tid, f.code) for f in oks] == [(t, 200) for t in tids]
        alice.close()
        bob.close()


def test_no_interleaving_while_a_frame_streams(make_relay) -> None:
    """Alice streams an 8 MiB frame to Bob in slow pieces; meanwhile Carol sends 50 small
    SENDs to Bob. Bob's stream stays well-formed: the big frame arrives whole, every small
    one arrives whole, and Carol's keep their order."""
    relay: Relay = make_relay(children=1)
    assert relay.start().returncode == 0
    alice, bob, carol = (_authed(relay.port, u) for u in ("alice", "bob", "alice"))
    big = bytes(range(256)) * (8 * MIB // 256)
    tid = new_tid()
    frame = build_request(
        tid, b"SEND", [bob.use_path or "", bob.uri], [alice.uri], [("Message-ID", "big")], big
    )
    alice.send_raw(frame[: len(frame) // 2])
    time.sleep(0.3)  # the relay is now writing the big frame's first half to Bob
    small = [carol.send_message(bob, b"small %d" % i, message_id=f"s{i}") for i in range(50)]
    time.sleep(0.3)
    alice.send_raw(frame[len(frame) // 2 :])
    got = [bob.recv(timeout=30) for _ in range(51)]
    bigs = [g for g in got if g.frame.tid == tid]
    assert len(bigs) == 1 and bigs[0].body == big
    assert [g.frame.tid for g in got if g.frame.tid != tid] == small
    assert got[0].frame.tid == tid  # the small ones waited for the streamed frame
    for c in (alice, bob, carol):
        c.close()


def test_slow_reader_keeps_relay_memory_bounded(make_relay) -> None:
    """Bob never reads while Alice pushes 256 MiB at him: the relay stops reading Alice
    (back-pressure), so its worker's memory grows by far less than what Alice tried to send."""
    relay: Relay = make_relay(children=1)
    assert relay.start().returncode == 0
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    (worker,) = relay.workers()
    before = worker.memory_info().rss
    alice.sock.settimeout(5)
    sent = 0
    body = b"z" * MIB
    try:
        while sent < 256 * MIB:
            _chunk(alice, bob, body, 1, len(body), "x")
            sent += len(body)
    except TimeoutError:
        pass  # Alice's socket is full: the relay has stopped reading her
    growth = worker.memory_info().rss - before
    assert sent < 256 * MIB, "the relay kept reading although Bob reads nothing"
    assert growth < 48 * MIB, f"worker grew by {growth / MIB:.0f} MiB"
    assert psutil.pid_exists(worker.pid)
    alice.close()
    bob.close()


def test_slow_reader_on_another_worker_keeps_memory_bounded(make_relay) -> None:
    """As above, with Alice and Bob on different workers: the relay pauses the handoff link
    into Bob's worker and then Alice's connection, so neither worker's memory runs away."""
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0
    for _ in range(20):  # connect until the kernel puts Alice and Bob on different workers
        alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
        if _worker_of(relay, alice) != _worker_of(relay, bob):
            break
        alice.close()
        bob.close()
    else:
        raise AssertionError("never got a cross-worker pair")
    workers = relay.workers()
    before = sum(w.memory_info().rss for w in workers)
    alice.sock.settimeout(5)
    sent, body = 0, b"z" * MIB
    try:
        while sent < 256 * MIB:
            _chunk(alice, bob, body, 1, len(body), "x")
            sent += len(body)
    except TimeoutError:
        pass
    growth = sum(w.memory_info().rss for w in workers) - before
    assert sent < 256 * MIB, "the relay kept reading although Bob reads nothing"
    assert growth < 64 * MIB, f"workers grew by {growth / MIB:.0f} MiB"
    alice.close()
    bob.close()
