"""Graceful stop under load (issue 12 item 5): `msrpd stop` with flooding senders and
receivers that stopped reading. Every SEND the relay answered 200 either reaches its
receiver (who reads what is left in his socket after the stop, until EOF) or comes back to
its sender as a failure REPORT naming its Message-ID; never both, never neither."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from msrpd.protocol.writer import build_request

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, wait_for

PAIRS = 10
SIGNAL_LATENCY = 1.0
"""Seconds from the supervisor's log line to every worker having taken the signal (margin)."""
BODY = 1500


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


@dataclass
class Pair:
    index: int
    alice: MsrpClient
    bob: MsrpClient
    tids: dict[bytes, str] = field(default_factory=dict)
    """tid -> Message-ID of each SEND written."""
    acked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    reported: list[tuple[str, bytes]] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    bad: list[bytes] = field(default_factory=list)
    bob_reading: threading.Event = field(default_factory=threading.Event)
    written_at: dict[str, float] = field(default_factory=dict)
    """Message-ID -> when Alice began writing it (wall clock, as the relay's log)."""

    def send_all(self, until: threading.Event) -> None:
        """Flood: SENDs with a numbered body, Failure-Report left to its default (yes)."""
        n = 0
        with contextlib.suppress(OSError):
            while not until.is_set():
                mid = f"p{self.index}-{n}"
                self.written_at[mid] = time.time()
                body = (b"%s " % mid.encode()).ljust(BODY, b".")
                self.alice.send_message(self.bob, body, message_id=mid)
                n += 1

    def alice_reads(self) -> None:
        """Responses and REPORTs, until the relay closes."""
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            while True:
                frame = self.alice.recv(timeout=60).frame
                if frame.method == b"REPORT":
                    mid = (frame.message_id or b"").decode()
                    self.reported.append((mid, frame.header("Status") or b""))
                elif frame.code is not None:
                    mid = self.tids.get(frame.tid, "?")
                    (self.acked if frame.code == 200 else self.refused).append(mid)
                else:
                    self.bad.append(frame.buf[:200])

    def bob_reads(self) -> None:
        """Everything, except while bob_reading is clear; until EOF."""
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            while True:
                self.bob_reading.wait()
                got = self.bob.recv(timeout=60)
                if got.frame.method == b"SEND":
                    self.delivered.append((got.frame.message_id or b"").decode())
                    assert got.body.startswith(b"%s " % got.frame.message_id)
                else:
                    self.bad.append(got.frame.buf[:200])


@pytest.mark.parametrize("balance", [True, False], ids=["colocated", "across-workers"])
def test_stop_delivers_or_reports_every_acknowledged_send(make_relay, balance: bool) -> None:
    """With `balance` off, pairs whose ends the kernel put on different workers stay so: their
    frames cross a handoff link, and a lost one is reported by the sender's worker (GONE)."""
    relay: Relay = make_relay(children=2, core={"drain_timeout": 6, "balance": balance})
    assert relay.start().returncode == 0, relay.log()
    pairs = [
        Pair(i, _authed(relay.port, "alice"), _authed(relay.port, "bob")) for i in range(PAIRS)
    ]
    # send_message picks its own tid: record it by patching in a known one per SEND.
    for pair in pairs:
        pair.alice.request = _recording(pair.alice, pair.tids)  # type: ignore[method-assign]
    done = threading.Event()
    threads = []
    for pair in pairs:
        pair.bob_reading.set()
        for target in (pair.alice_reads, pair.bob_reads):
            threads.append(threading.Thread(target=target, daemon=True))
        threads.append(threading.Thread(target=pair.send_all, args=(done,), daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    for pair in pairs:
        pair.bob_reading.clear()  # receivers stop reading ...
    time.sleep(0.5)  # ... 0.5 s before the stop
    stopped = relay.cli("stop", "--timeout", "30")
    assert stopped.returncode == 0, stopped.stderr
    for pair in pairs:
        pair.bob_reading.set()  # Bob reads what is left in his socket, until EOF
    done.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    # The relay's own record of when the stop began (`msrpd stop` takes a while to start).
    term_line = next(line for line in relay.log().splitlines() if "graceful stop" in line)
    term = datetime.strptime(term_line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    total_acked = total_reported = 0
    for pair in pairs:
        acked, delivered = set(pair.acked), set(pair.delivered)
        reported = {mid for mid, _ in pair.reported}
        assert not pair.bad, pair.bad[:3]
        assert len(acked) == len(pair.acked) and len(delivered) == len(pair.delivered)
        assert len(reported) == len(pair.reported), "a SEND reported twice"
        assert not delivered & reported, f"delivered and reported: {sorted(delivered & reported)}"
        lost = acked - delivered - reported
        assert not lost, (
            f"pair {pair.index}: {len(lost)} acknowledged SENDs lost: {sorted(lost)[:5]}; "
            f"{[(p.index, len(p.acked), len(p.delivered), len(p.reported)) for p in pairs]}\n"
            + _stop_log(relay)
        )
        assert delivered <= acked and reported <= acked
        # Nothing Alice began to write after the stop was read, so nothing was answered 200.
        late = [mid for mid in acked if pair.written_at[mid] > term + SIGNAL_LATENCY]
        assert not late, f"acknowledged after the stop: {late[:5]}"
        # Bob gets Alice's SENDs in order, without gaps before the last one delivered.
        numbers = [int(mid.split("-")[1]) for mid in pair.delivered]
        assert numbers == list(range(len(numbers)))
        assert all(status.split()[1] != b"200" for _, status in pair.reported)
        total_acked += len(acked)
        total_reported += len(reported)
    # The receivers really were behind: the stop had SENDs it could not deliver.
    assert total_reported > 0
    assert total_acked > total_reported
    for pair in pairs:
        pair.alice.close()
        pair.bob.close()


def _recording(client: MsrpClient, tids: dict[bytes, str]):  # type: ignore[no-untyped-def]
    plain = client.request

    def request(method, to_path, headers=None, body=None, tid=None):  # type: ignore[no-untyped-def]
        tid = tid or new_tid()
        mids = [v for k, v in headers or () if k == "Message-ID"]
        if mids:
            tids[tid] = mids[0]
        return plain(method, to_path, headers, body, tid)

    return request


def _stop_log(relay: Relay) -> str:
    """The relay's log lines about the stop, for a failure message."""
    words = ("stop", "WARNING", "ERROR")
    lines = [line for line in relay.log().splitlines() if any(w in line for w in words)]
    return "\n".join(line for line in lines if "msrpd.acct" not in line)[-5000:]


def test_stop_finishes_a_streamed_frame_then_reads_nothing_more(make_relay) -> None:
    """Alice is in the middle of a 3 MiB SEND (over max_body: streamed) when the stop comes:
    the relay reads it to its end-line and Bob gets it whole; the SEND she writes after it is
    never read, so it is neither answered nor delivered."""
    relay: Relay = make_relay(children=1, core={"drain_timeout": 10})
    assert relay.start().returncode == 0, relay.log()
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    body = bytes(range(256)) * (3 * 4096)
    tid = new_tid()
    headers = [("Message-ID", "big"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    headers.append(("Content-Type", "application/octet-stream"))
    frame = build_request(tid, b"SEND", [bob.use_path or "", bob.uri], [alice.uri], headers, body)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(bob.recv(timeout=30).body))
    reader.start()
    half = 2 * len(frame) // 3  # over max_body (1 MiB): routed, streaming
    alice.send_raw(frame[:half])
    time.sleep(0.5)  # the head is routed, the body streams to Bob
    supervisor = relay.supervisor()
    supervisor.send_signal(signal.SIGTERM)  # what `msrpd stop` sends
    wait_for(lambda: "graceful stop" in relay.log(), 5, "the stop")
    time.sleep(0.5)
    rest = frame[half:]
    for at in range(0, len(rest), 1 << 16):
        alice.send_raw(rest[at : at + (1 << 16)])
    late = alice.send_message(bob, b"after the stop", message_id="late")
    reader.join(30)
    assert got == [body]
    assert alice.recv(timeout=10).frame.tid == tid  # its 200 (sent on the head, item 10)
    with contextlib.suppress(EOFError, OSError):
        extra = bob.recv(timeout=15)
        raise AssertionError(f"Bob got a frame read after the stop: {extra.frame.buf[:80]!r}")
    with contextlib.suppress(EOFError, OSError):
        answer = alice.recv(timeout=15)
        assert answer.frame.tid != late, "a SEND written after the stop was answered"
        raise AssertionError(f"unexpected frame for Alice: {answer.frame.buf[:80]!r}")
    supervisor.wait(15)
    alice.close()
    bob.close()
