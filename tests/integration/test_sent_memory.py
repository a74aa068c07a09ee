"""The GONE -> REPORT memory (msrpd/workers/gone.py) with one destination stalled while
another keeps flowing, across workers (RFC 4975 §7.1.2: a SEND answered 200 that cannot be
delivered is reported to its sender).

Bob-S stops reading: what Alice-S sends him waits in his outbox on the other worker. Then
Alice-F floods Bob-F (who reads) with far more frames than the sender's worker may remember
([core] handoff_memory). A stop then gives up on Bob-S's outbox: each of those SENDs must be
reported to Alice-S (the sender's worker still knows it), or have reached Bob-S."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time

import pytest

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, wait_for
from .test_colocate import _owners, _port

pytestmark = pytest.mark.serial
"""A stop with a give-up margin of 3 s (as test_stop.py)."""

MEMORY = 8 << 20
"""[core] handoff_memory: about 18,000 records of these SENDs (some 450 bytes each), more than
worker 1 holds for Bob-S when flow control has stopped Alice-S (about 8,000 here: his
outbox, what came before the PAUSE took effect)."""
FLOOD = 30000
"""SENDs of the flowing pair: their records alone weigh over 1.5 times MEMORY."""


class End:
    """One client: the SENDs it wrote (tid -> Message-ID), and what came back or in."""

    def __init__(self, relay: Relay, user: str) -> None:
        self.user = user
        self.client = MsrpClient(relay.port, timeout=30)
        assert self.client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        self.tids: dict[bytes, str] = {}
        self.acked: list[str] = []
        self.reported: list[tuple[str, bytes]] = []
        self.delivered: list[str] = []
        self.bad: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.stalled = threading.Event()
        """Stop sending (flow control stopped reading this client)."""
        self.ended = ""
        """How reading ended, when not by EOF."""

    def send(self, to: End, prefix: str, count: int | None = None) -> None:
        """`count` SENDs, or (None) until the relay stops reading them and then the
        connection closes."""
        client = self.client
        assert to.client.use_path
        path = f"{to.client.use_path} {to.client.uri}"
        for n in range(count) if count is not None else itertools.count():
            if self.stalled.is_set():
                return
            mid = f"{prefix}-{n}"
            tid = new_tid()
            self.tids[tid] = mid
            body = f"{mid} ".encode().ljust(120, b".")
            headers = [
                ("Message-ID", mid),
                ("Byte-Range", f"1-{len(body)}/{len(body)}"),
                ("Content-Type", "text/plain"),
            ]
            try:
                client.request("SEND", path, headers, body, tid)
            except OSError:
                if count is None:
                    return  # the relay stopped and closed
                raise

    def _read(self) -> None:
        """Until EOF: 200s and REPORTs (a sender), SENDs (a receiver, who answers none)."""
        try:
            while True:
                got = self.client.recv(timeout=60)
                frame = got.frame
                if frame.method == b"REPORT":
                    self.reported.append(
                        ((frame.message_id or b"").decode(), frame.header("Status") or b"")
                    )
                elif frame.method == b"SEND":
                    self.delivered.append((frame.message_id or b"").decode())
                elif frame.code == 200:
                    self.acked.append(self.tids[frame.tid])
                else:
                    self.bad.append(frame.buf[:200])
        except EOFError:
            pass
        except Exception as exc:  # checked by the test
            self.ended = repr(exc)


def _split(relay: Relay) -> tuple[End, End, End, End]:
    """Alice-S, Bob-S, Alice-F, Bob-F: each Alice on worker 0, each Bob on worker 1. The
    kernel places each connection (SO_REUSEPORT, by a hash of its addresses): 24 more are
    opened while too few landed where wanted (1 or 0 of 12 does happen, about once in 300)."""
    ends: list[End] = []
    alices: list[End] = []
    bobs: list[End] = []
    owners: dict[int, int] = {}
    while len(alices) < 2 or len(bobs) < 2:
        assert len(ends) < 96, owners
        ends += [End(relay, "alice" if n % 2 else "bob") for n in range(24)]
        owners = _owners(relay, 2)
        alices = [e for e in ends if e.user == "alice" and owners[_port(e.client)] == 0]
        bobs = [e for e in ends if e.user == "bob" and owners[_port(e.client)] == 1]
    for end in ends:
        if end not in alices[:2] + bobs[:2]:
            end.client.close()
    return alices[0], bobs[0], alices[1], bobs[1]


def _wait_stalled(sender: End, quiet: float = 1.0, limit: float = 60.0) -> None:
    """Until no 200 has come for `quiet` seconds: flow control stopped reading the sender."""
    began = time.monotonic()
    count, since = len(sender.acked), began
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        if len(sender.acked) != count:
            count, since = len(sender.acked), time.monotonic()
        assert time.monotonic() - began < limit, f"the sender never stalled: {count}"
    sender.stalled.set()


def test_a_stalled_receivers_frames_are_reported_after_a_flood_past_the_memory(
    make_relay,  # type: ignore[no-untyped-def]
) -> None:
    relay: Relay = make_relay(
        children=2, core={"balance": False, "drain_timeout": 6, "handoff_memory": MEMORY}
    )
    assert relay.start().returncode == 0, relay.log()
    alice_s, bob_s, alice_f, bob_f = _split(relay)
    try:
        # Bob-S reads nothing until the stop has given up on him: a phone's buffer keeps the
        # kernels' share small, the rest waits in his outbox on worker 1.
        bob_s.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
        for end in (alice_s, alice_f, bob_f):
            end.thread.start()
        threading.Thread(target=alice_s.send, args=(bob_s, "s"), daemon=True).start()
        _wait_stalled(alice_s)
        alice_f.send(bob_f, "f", FLOOD)
        wait_for(lambda: len(bob_f.delivered) == FLOOD, 60, "Bob-F's SENDs")
        wait_for(lambda: len(alice_f.acked) == FLOOD, 30, "Alice-F's 200s")
        time.sleep(0.5)  # the relay passed to the kernel what Bob-S's buffers take
        results: list[subprocess.CompletedProcess[str]] = []
        stopper = threading.Thread(
            target=lambda: results.append(relay.cli("stop", "--timeout", "30"))
        )
        stopper.start()
        # Once worker 1 has given up on his outbox he reads what the kernels hold, until EOF:
        # the worker then ends its stop when he has it all, not at its deadline.
        gave_up = f"frames for tcp:127.0.0.1:{_port(bob_s.client)} not delivered"
        wait_for(lambda: gave_up in relay.log(), 30, "the stop's give-up")
        bob_s.thread.start()
        stopper.join(60)
        assert results and results[0].returncode == 0, results
        for end in (alice_s, alice_f, bob_f, bob_s):
            end.thread.join(60)
            assert not end.thread.is_alive(), (
                f"{end.user} reads on: {len(end.acked)} 200s, {len(end.delivered)} SENDs\n"
                + relay.log()[-3000:]
            )
            assert not end.bad, end.bad[:3]
            assert not end.ended, end.ended
    finally:
        for end in (alice_s, bob_s, alice_f, bob_f):
            end.client.close()
    log = relay.log()
    assert bob_f.delivered == [f"f-{n}" for n in range(FLOOD)]
    assert not alice_f.reported
    acked, reported = set(alice_s.acked), {mid for mid, _ in alice_s.reported}
    delivered = set(bob_s.delivered)
    assert bob_s.delivered == [f"s-{n}" for n in range(len(bob_s.delivered))]
    assert len(reported) == len(alice_s.reported), "a SEND reported twice"
    assert not delivered & reported, sorted(delivered & reported)[:5]
    lost = acked - delivered - reported
    assert not lost, (
        f"{len(lost)} acknowledged SENDs neither delivered nor reported "
        f"({len(delivered)} delivered, {len(reported)} reported): {sorted(lost)[:5]}"
    )
    assert "was not delivered" not in log
    # The stop had to give up on many (they were in Bob-S's outbox, not the kernels).
    assert len(reported) > 1000, (len(delivered), len(reported))
    assert all(status == b"000 408 Relay Stopping" for _, status in alice_s.reported)
