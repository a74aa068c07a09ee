"""Streamed frames whose path leaves the relay and comes back into it (issue 12, item 11).

Alice and Bob AUTH at R1 (two workers) and chat through a second, real relay R2:
`To-Path: <R1/sidA> <R2> <R1/sidB> <bob>` and back. R1 opens one connection to R2 (O) and R2
one to R1 (I), so frames go out on O and come back on I, across R1's workers both ways. With
a handoff link paused whenever one destination was congested, this formed a cycle (O waits
for R2, R2 for I, I for the link, the link for O) and the frames of every other session on
that link waited for good, silently. Every frame must arrive whole, and every handoff one
worker sent must be delivered by the other.
"""

from __future__ import annotations

import hashlib
import threading
import time

from msrpd.protocol.writer import build_request
from msrpd.supervisor import layout_for

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay
from .test_balance import COUNTERS_PUBLISHED

MIB = 1 << 20
ROUNDS = 3


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def _big_send(src: MsrpClient, path: list[str], body: bytes, mid: str) -> bytes:
    tid = new_tid()
    headers = [("Message-ID", mid), ("Byte-Range", f"1-*/{len(body)}")]
    headers.append(("Content-Type", "application/octet-stream"))
    src.send_raw(build_request(tid, b"SEND", path, [src.uri], headers, body))
    return tid


def both_ways(
    alice: MsrpClient, bob: MsrpClient, to_bob: list[str], to_alice: list[str], body: bytes
) -> None:
    """Alice and Bob each send `body` to the other at the same time (To-Paths `to_bob` and
    `to_alice`), reading as they go: each gets one 200 and the other's body, intact."""
    ends = {"a": (alice, to_bob), "b": (bob, to_alice)}
    got: dict[str, list[tuple[int | None, bytes]]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def send(name: str) -> None:
        client, path = ends[name]
        try:
            _big_send(client, path, body, f"{name}{len(body)}")
        except BaseException as exc:  # reported below, with what was received
            errors.append(exc)

    def read(name: str) -> None:
        client = ends[name][0]
        try:
            for _ in range(2):  # the 200 for its own SEND, and the other's SEND
                received = client.recv(timeout=20)
                got[name].append((received.frame.code, received.body))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, args=(n,)) for f in (send, read) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, (errors, {n: [(c, len(b)) for c, b in v] for n, v in got.items()})
    digest = hashlib.sha256(body).digest()
    for name in "ab":
        codes = sorted((code or 0, len(b)) for code, b in got[name])
        assert codes == [(0, len(body)), (200, 0)], codes
        assert [hashlib.sha256(b).digest() for code, b in got[name] if code is None] == [digest]


def test_streams_out_and_back_in_lose_no_handoff(make_relay) -> None:  # type: ignore[no-untyped-def]
    r1: Relay = make_relay(children=2)
    r2: Relay = make_relay(children=1)
    for relay in (r1, r2):
        result = relay.start()
        assert result.returncode == 0, result.stderr + relay.log()
    r2_uri = f"msrp://127.0.0.1:{r2.port}/hop;tcp"
    alice, bob = _authed(r1.port, "alice"), _authed(r1.port, "bob")
    assert alice.use_path and bob.use_path
    to_bob = [alice.use_path, r2_uri, bob.use_path, bob.uri]
    to_alice = [bob.use_path, r2_uri, alice.use_path, alice.uri]
    for rnd in range(ROUNDS):
        both_ways(alice, bob, to_bob, to_alice, bytes([rnd + 1]) * (10 * MIB))
    # Unrelated pairs afterwards: every SEND that got a 200 arrives.
    for n in range(6):
        with _authed(r1.port, "alice") as a, _authed(r1.port, "bob") as b:
            tids = [a.send_message(b, b"pair %d message %d" % (n, i), f"p{i}") for i in range(5)]
            assert [(a.recv(timeout=10).frame.tid) for _ in tids] == tids
            assert [b.recv(timeout=10).body for _ in tids] == [
                b"pair %d message %d" % (n, i) for i in range(5)
            ]
    time.sleep(COUNTERS_PUBLISHED)
    shm = layout_for(r1.settings()).attach_all()
    try:
        rows = [c for c in shm.stats.per_slot().values() if c["frames_in_send"]]
        assert len(rows) == 2, rows
        total = shm.stats.total()
        assert total["handoffs_out"] == total["handoffs_in"] > 0, rows
        assert total["relay_fail"] == total["handoff_gone"] == 0
    finally:
        shm.close()
    alice.close()
    bob.close()
