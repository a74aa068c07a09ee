"""Streamed frames whose path leaves the relay and comes back into it (issue 12, item 11).

Alice (worker 0) and Bob (worker 1) AUTH at the relay R and chat through a next hop P, a plain
TCP peer that plays a second relay: `To-Path: <R/sidA> <P> <R/sidB> <bob>` and back. R opens
one connection to P (O, on worker 0: Alice relays first) and P one to R (I, on worker 1), so
frames go out on O and come back on I, across R's workers both ways. With a handoff link
paused whenever one destination was congested, this formed a cycle (O waits for P, P for I,
I for the link 1->0, the link for O) and the frames of every other session on that link
waited for good, silently. Every frame must arrive whole, and every handoff one worker sent
must be delivered by the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from typing import Any

from msrpd.control.workerctl import query_worker
from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.protocol.splice import relay_splice
from msrpd.protocol.writer import build_request
from msrpd.rundir import ctl_path, layout_for

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay
from .test_balance import COUNTERS_PUBLISHED

MIB = 1 << 20
ROUNDS = 3


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def conns(relay: Relay) -> list[dict[str, Any]]:
    """Every worker's connections (msrp.conns, per worker), each with its worker's slot."""
    run_dir = relay.settings().core.run_dir
    rows: list[dict[str, Any]] = []
    for slot in range(relay.settings().core.children):
        answer = query_worker(ctl_path(run_dir, slot, 1), "conns")
        rows.extend({**c, "slot": slot} for c in answer)
    return rows


def slot_of(relay: Relay, sock: socket.socket) -> int | None:
    port = sock.getsockname()[1]
    return next((c["slot"] for c in conns(relay) if c["peer"].endswith(f":{port}")), None)


def split_pair(relay: Relay) -> tuple[MsrpClient, MsrpClient]:
    """An AUTHed Alice on worker 0 and Bob on worker 1 (with balance off: connect until the
    kernel's SO_REUSEPORT hash has put one on each); the other clients are closed."""
    found: dict[int, MsrpClient] = {}
    for _ in range(40):
        user = "alice" if not found.get(0) else "bob"
        client = MsrpClient(relay.port, timeout=30)
        assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        slot = slot_of(relay, client.sock)
        if slot is not None and slot not in found and (slot == 0) == (user == "alice"):
            found[slot] = client
            if len(found) == 2:
                return found[0], found[1]
        else:
            client.close()
    raise AssertionError(f"40 connections did not give one per worker: {found}")


class NextHop:
    """A plain TCP peer playing the next relay: it forwards each request the relay sends it
    on O, spliced as a relay does (RFC 4976 §6.2), over its own connection I into the relay,
    writing as fast as the relay reads I (blocking sends: back-pressure passes through, as
    through a real relay); responses are dropped, as the relay's cmap route drops them."""

    def __init__(self, relay: Relay, slot: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"msrp://127.0.0.1:{self.listener.getsockname()[1]}/hop;tcp"
        self.into = self._connect(relay, slot)
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._forward, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _connect(relay: Relay, slot: int) -> socket.socket:
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", relay.port))
            deadline = time.monotonic() + 5
            where = slot_of(relay, sock)
            while where is None and time.monotonic() < deadline:
                time.sleep(0.02)
                where = slot_of(relay, sock)
            if where == slot:
                return sock
            sock.close()
        raise AssertionError(f"no connection of 40 landed on worker {slot}")

    def _forward(self) -> None:
        try:
            out, _ = self.listener.accept()
            with out:
                self._relay_from(out)
        except OSError as exc:
            self.errors.append(exc)

    def _relay_from(self, out: socket.socket) -> None:
        reader = FrameReader(ReaderLimits(max_body=64 * 1024))
        forwarding = False
        while data := out.recv(1 << 20):
            reader.receive_data(data)
            for event in reader.events():
                if isinstance(event, Frame):
                    forwarding = event.method is not None
                    if forwarding:
                        self.into.sendall(relay_splice(event))
                elif isinstance(event, BodyPiece) and forwarding:
                    self.into.sendall(event.data)
                elif isinstance(event, FrameEnd) and forwarding:
                    self.into.sendall(event.raw)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self.into.recv(1 << 16):
                pass  # the relay's 200s for what came on I

    def close(self) -> None:
        self.into.close()
        self.listener.close()


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


def _overlapping(
    alice: MsrpClient, bob: MsrpClient, to_bob: list[str], to_alice: list[str]
) -> None:
    """Alice's 10 MiB frame starts streaming out on O; while it is half done, Bob's 10 MiB
    frame for O arrives from the other worker and waits behind it (more than 1 MiB of it, held
    by O's gate); then the rest of Alice's comes. Alice's stream must be written on: it is
    what Bob's waits for."""
    body_a, body_b = b"a" * (10 * MIB), b"b" * (10 * MIB)
    headers = [("Byte-Range", f"1-*/{10 * MIB}"), ("Content-Type", "application/octet-stream")]
    frame_a = build_request(new_tid(), b"SEND", to_bob, [alice.uri], headers, body_a)
    frame_b = build_request(new_tid(), b"SEND", to_alice, [bob.uri], headers, body_b)
    got: dict[str, list[tuple[int | None, bytes]]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def read(name: str, client: MsrpClient) -> None:
        try:
            for _ in range(2):
                received = client.recv(timeout=20)
                got[name].append((received.frame.code, received.body))
        except BaseException as exc:
            errors.append(exc)

    def send(client: MsrpClient, data: bytes) -> None:
        try:
            client.send_raw(data)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, args=a) for a in (("a", alice), ("b", bob))]
    for thread in readers:
        thread.start()
    alice.send_raw(frame_a[: 3 * MIB])
    time.sleep(0.5)  # O is writing Alice's frame
    bob_sends = threading.Thread(target=send, args=(bob, frame_b))
    bob_sends.start()
    time.sleep(1.0)  # Bob's frame waits behind it
    send(alice, frame_a[3 * MIB :])
    bob_sends.join(60)
    for thread in readers:
        thread.join(60)
    assert not errors, (errors, {n: [(c, len(b)) for c, b in v] for n, v in got.items()})
    assert sorted((c or 0, b) for c, b in got["a"]) == [(0, body_b), (200, b"")]
    assert sorted((c or 0, b) for c, b in got["b"]) == [(0, body_a), (200, b"")]


def test_streams_out_and_back_in_lose_no_handoff(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, core={"balance": False})
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    alice, bob = split_pair(relay)
    hop = NextHop(relay, 1)  # I on Bob's worker
    assert alice.use_path and bob.use_path
    to_bob = [alice.use_path, hop.uri, bob.use_path, bob.uri]
    to_alice = [bob.use_path, hop.uri, alice.use_path, alice.uri]
    # Alice relays first: the relay's connection to the hop (O) is worker 0's.
    headers = [("Message-ID", "m0"), ("Byte-Range", "1-5/5"), ("Content-Type", "text/plain")]
    tid = new_tid()
    alice.send_raw(build_request(tid, b"SEND", to_bob, [alice.uri], headers, b"hello"))
    assert alice.recv().frame.code == 200
    first = bob.recv()
    assert (first.body, first.frame.to_path) == (b"hello", [bob.uri])
    outbound = [c for c in conns(relay) if not c["local"]]
    assert [c["slot"] for c in outbound] == [0], outbound
    _overlapping(alice, bob, to_bob, to_alice)
    for rnd in range(ROUNDS):
        both_ways(alice, bob, to_bob, to_alice, bytes([rnd + 1]) * (10 * MIB))
    # Unrelated pairs afterwards: every SEND that got a 200 arrives.
    for n in range(6):
        with _authed(relay.port, "alice") as a, _authed(relay.port, "bob") as b:
            tids = [a.send_message(b, b"pair %d message %d" % (n, i), f"p{i}") for i in range(5)]
            assert [(a.recv(timeout=10).frame.tid) for _ in tids] == tids
            assert [b.recv(timeout=10).body for _ in tids] == [
                b"pair %d message %d" % (n, i) for i in range(5)
            ]
    time.sleep(COUNTERS_PUBLISHED)
    shm = layout_for(relay.settings()).attach_all()
    try:
        total = shm.stats.total()
        assert total["handoffs_out"] == total["handoffs_in"] > 0
        assert total["relay_fail"] == total["handoff_gone"] == 0
    finally:
        shm.close()
    assert hop.errors == []
    hop.close()
    alice.close()
    bob.close()
