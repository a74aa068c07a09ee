"""Graceful stop under load (issue 12 item 5): `msrpd stop` with flooding senders and
receivers that stopped reading. Every SEND the relay answered 200 either reaches its
receiver (who reads what is left in his socket after the stop, until EOF) or comes back to
its sender as a failure REPORT naming its Message-ID; never both, never neither. Chat-sized
and larger bodies, both ends on one worker or on two, receivers that answer every SEND they
read with 200 (as real clients do, RFC 4975 §7.2) or answer nothing."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from msrpd.control.workerctl import WorkerCtlError
from msrpd.protocol import Status
from msrpd.protocol.writer import build_reply

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, exited, wait_for
from .test_colocate import _owners, _port

pytestmark = pytest.mark.serial
"""Twelve flooding pairs, then a stop whose give-up margin (3 s) must hold the REPORTs' way to
the senders' Python readers: on a machine shared with other tests that margin is not enough,
so scripts/test runs these alone, after the parallel run."""

LOG_GRAIN = 0.002
"""The log's timestamps are truncated to milliseconds."""


def _authed(port: int, user: str, **buffers: int) -> MsrpClient:
    """A client of `user`, its socket's `buffers` (SO_SNDBUF, SO_RCVBUF) and its segment size
    (1460) set before it connects."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    for name, size in buffers.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, name), size)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    client = MsrpClient(port, timeout=30, sock=sock)
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
    body: int = 1500
    answers: bool = False
    """Bob answers every SEND he reads with 200."""
    bob_reading: threading.Event = field(default_factory=threading.Event)
    reset_ok: bool = False
    alice_ended: str = ""
    bob_ended: str = ""
    """How Bob's reading ended, when it was not by EOF."""
    written_at: dict[str, float] = field(default_factory=dict)
    """Message-ID -> when Alice began writing it (wall clock, as the relay's log)."""
    before: int = 0
    """SENDs Bob had read when he began to read again, after the stop began."""

    def send_all(self, flood: threading.Event, until: threading.Event) -> None:
        """SENDs with a numbered body, Failure-Report left to its default (yes): a trickle,
        then a flood once `flood` is set."""
        n = 0
        with contextlib.suppress(OSError):
            while not until.is_set():
                mid = f"p{self.index}-{n}"
                self.written_at[mid] = time.time()
                body = (b"%s " % mid.encode()).ljust(self.body, b".")
                self.alice.send_message(self.bob, body, message_id=mid)
                n += 1
                if not flood.is_set():
                    time.sleep(0.01)

    def _answer(self, out: bytearray) -> None:
        """Write what the socket takes now of Bob's 200s; the rest waits for the next one."""
        sock = self.bob.sock
        sock.setblocking(False)  # recv sets its own timeout again
        try:
            del out[: sock.send(out)]
        except BlockingIOError:
            pass
        except OSError:
            # The relay is gone (its deadline came while he still answered, and his next
            # answer met its closed socket): he answers no more, and reads what his kernel
            # holds; the read then ends with the reset, not EOF.
            out.clear()
            self.reset_ok = True

    def alice_reads(self) -> None:
        """Responses and REPORTs, until the relay closes."""
        try:
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
        except Exception as exc:  # EOF, or a reset once she has it all: checked by the counts
            self.alice_ended = repr(exc)

    def bob_reads(self) -> None:
        """Everything, except while bob_reading is clear; until EOF. With `answers`, each
        SEND read gets its 200, written without blocking the reading (an event-driven
        client): what the socket does not take now is written later."""
        out = bytearray()
        try:
            while True:
                self.bob_reading.wait()
                got = self.bob.recv(timeout=60)
                if got.frame.method == b"SEND":
                    self.delivered.append((got.frame.message_id or b"").decode())
                    assert got.body.startswith(b"%s " % got.frame.message_id)
                    if self.answers and not self.reset_ok:
                        out += build_reply(got.frame, Status.OK, "OK")
                        self._answer(out)
                else:
                    self.bad.append(got.frame.buf[:200])
        except EOFError:
            pass  # the relay closed, after all it had for him
        except ConnectionResetError as exc:
            if not self.reset_ok:
                self.bob_ended = repr(exc)
        except Exception as exc:  # a reset, a timeout: checked below
            self.bob_ended = repr(exc)


KINDS = [(body, answers) for body in (120, 1500) for answers in (False, True)]
"""Chat-sized and larger bodies, each to receivers that answer nothing and to receivers that
answer every SEND: PER_KIND pairs of each kind, side by side in one relay and one stop."""
PER_KIND = 3


@pytest.mark.parametrize("balance", [True, False], ids=["colocated", "across-workers"])
def test_stop_delivers_or_reports_every_acknowledged_send(make_relay, balance: bool) -> None:
    """With `balance` on, each pair is moved onto one worker (colocate.py) before its Bob stops
    reading. With it off, each Alice is on the other worker than her Bob: their frames cross a
    handoff link, and a lost one is reported by the sender's worker (GONE). Chat-sized bodies
    put tens of thousands of frames in flight at the stop; an answering Bob keeps sending
    (200s) to a relay that reads no new frame, while a silent one reads only once it is gone."""
    # drain_timeout 10: the stop gives up 3 s before it, and whatever is in the kernels by then
    # must still be read by the test's Python readers (36 threads) before the deadline, also
    # when the whole suite loads both cores (with 6 s an answering Bob under load once read
    # too slowly, and his answer then met the closed socket: reset, kernel bytes lost).
    relay: Relay = make_relay(children=2, core={"drain_timeout": 10, "balance": balance})
    assert relay.start().returncode == 0, relay.log()
    kinds = [kind for kind in KINDS for _ in range(PER_KIND)]  # each kind both ways across
    ends = _across(relay) if not balance else [_ends(relay) for _ in kinds]
    pairs = [
        Pair(i, alice, bob, body=body, answers=answers)
        for i, ((alice, bob), (body, answers)) in enumerate(zip(ends, kinds, strict=True))
    ]
    try:
        _flood_then_stop(relay, pairs, colocated=balance)
    finally:  # a failed check must not leave sockets behind for a later test's GC to warn of
        for pair in pairs:
            pair.alice.close()
            pair.bob.close()


def _ends(relay: Relay) -> tuple[MsrpClient, MsrpClient]:
    """Alice and Bob with a phone's buffers and a real network's segments, not a server's
    and loopback's: what the kernels hold for a Bob who stopped reading stays small, so the
    stop has frames it must give up on, and Alice stalls soon after him (the relay's buffers
    for a connection grow with the segments and with what its peer has in flight; a sender's
    buffers hold frames nobody answered, which count for nothing here)."""
    alice = _authed(relay.port, "alice", SO_SNDBUF=1 << 16)
    return alice, _authed(relay.port, "bob", SO_RCVBUF=1 << 15)


def _across(relay: Relay) -> list[tuple[MsrpClient, MsrpClient]]:
    """Alice-Bob pairs whose ends the kernel put on different workers (balance off: they
    stay there), alternately each way; the clients not needed are closed."""
    half = len(KINDS) * PER_KIND // 2
    opened: list[tuple[MsrpClient, MsrpClient]] = []
    for _ in range(8):
        opened += [_ends(relay) for _ in range(half)]
        owners = _owners_now(relay)
        alices = [[a for a, _ in opened if owners[_port(a)] == w] for w in (0, 1)]
        bobs = [[b for _, b in opened if owners[_port(b)] == w] for w in (0, 1)]
        ways = [list(zip(alices[w], bobs[1 - w], strict=False)) for w in (0, 1)]
        if min(len(way) for way in ways) >= half:
            break
    else:
        raise AssertionError(f"the kernel put too few ends on one worker: {owners}")
    pairs = [pair for n in range(half) for pair in (ways[0][n], ways[1][n])]
    used = {id(client) for pair in pairs for client in pair}
    for client in (client for ends in opened for client in ends):
        if id(client) not in used:
            client.close()
    return pairs


def _start_pairs(
    pairs: list[Pair],
) -> tuple[threading.Event, threading.Event, list[threading.Thread]]:
    """Each pair's readers and sender running (every SEND's tid recorded); the senders wait
    for the first event (`flood`) and stop at the second (`done`)."""
    # send_message picks its own tid: record it by patching in a known one per SEND.
    for pair in pairs:
        pair.alice.request = _recording(pair.alice, pair.tids)  # type: ignore[method-assign]
    flood, done = threading.Event(), threading.Event()
    threads = []
    for pair in pairs:
        pair.bob_reading.set()
        for target in (pair.alice_reads, pair.bob_reads):
            threads.append(threading.Thread(target=target, daemon=True))
        threads.append(threading.Thread(target=pair.send_all, args=(flood, done), daemon=True))
    for thread in threads:
        thread.start()
    return flood, done, threads


def _flood_then_stop(relay: Relay, pairs: list[Pair], colocated: bool) -> None:
    flood, done, threads = _start_pairs(pairs)
    if colocated:
        _colocate(relay, pairs)
    flood.set()
    time.sleep(1.0)
    for pair in pairs:
        pair.bob_reading.clear()  # receivers stop reading ...
    # ... until the relay holds frames for them that no kernel takes: every Alice stalled
    # (the relay stopped reading her, RFC 4975 §5.4 flow control), however fast this machine.
    # A fixed wait let chat-sized floods on a slow machine fit whole in the kernels' send
    # buffers (4 MiB each), leaving a silent Bob's stop nothing to report.
    _wait_stalled(pairs)
    # Where each pair is served when the stop comes.
    assert _together(relay, pairs) == [colocated] * len(pairs)
    results: list[subprocess.CompletedProcess[str]] = []
    stopper = threading.Thread(target=lambda: results.append(relay.cli("stop", "--timeout", "30")))
    stopper.start()
    # An answering Bob catches up while the relay stops: he reads again, and answers each
    # SEND, 0.5 s after both workers stopped reading. A silent Bob reads only once the relay
    # is gone: what its kernel held still reaches him.
    wait_for(lambda: len(STOP_LINE.findall(relay.log())) == 2, 10, "the workers' stop")
    time.sleep(0.5)
    for pair in pairs:
        if pair.answers:
            pair.before = len(pair.delivered)
            pair.bob_reading.set()
    stopper.join(60)
    assert results and results[0].returncode == 0, results
    for pair in pairs:
        if not pair.answers:
            pair.before = len(pair.delivered)
            pair.bob_reading.set()  # Bob reads what is left in his socket, until EOF
    done.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert "SIGKILL" not in relay.log(), _stop_log(relay)
    # When each worker took the signal and stopped reading (its own log line): the last of
    # them read nothing written after it.
    took = [_log_time(line) for line in relay.log().splitlines() if STOP_LINE.search(line)]
    assert len(took) == 2, _stop_log(relay)
    term = max(took)
    for pair in pairs:
        check_pair(relay, pairs, pair, term)
        # A silent Bob had SENDs the stop could not deliver; an answering one may have none.
        assert pair.reported or pair.answers, (pair.index, _stop_log(relay))
        assert len(pair.acked) > len(pair.reported)


def check_pair(relay: Relay, pairs: list[Pair], pair: Pair, term: float) -> None:
    """What a stop at `term` (the last worker's stop line) must leave of one pair: every SEND
    answered 200 reached Bob or came back to Alice as a failure REPORT, once, never both,
    never neither; Bob got his in order, without gaps; nothing Alice began to write after
    the stop was answered 200; and Bob was behind: the stop had SENDs to deliver to him."""
    acked, delivered = set(pair.acked), set(pair.delivered)
    reported = {mid for mid, _ in pair.reported}
    assert not pair.bad, pair.bad[:3]
    assert not pair.bob_ended, f"pair {pair.index}: Bob read until {pair.bob_ended}\n" + _stop_log(
        relay
    )
    assert len(acked) == len(pair.acked), "a SEND acknowledged twice"
    assert len(delivered) == len(pair.delivered), "a SEND delivered twice"
    assert len(reported) == len(pair.reported), "a SEND reported twice"
    both = delivered & reported
    assert not both, (
        f"pair {pair.index}: {len(both)} delivered and reported: {sorted(both)[:5]}\n"
        + _stop_log(relay)
    )
    lost = acked - delivered - reported
    assert not lost, (
        f"pair {pair.index}: {len(lost)} acknowledged SENDs lost: {sorted(lost)[:5]}; "
        f"{[(p.index, len(p.acked), len(p.delivered), len(p.reported)) for p in pairs]}\n"
        + _stop_log(relay)
    )
    assert delivered <= acked and reported <= acked, (
        f"pair {pair.index}: not acknowledged: {sorted(delivered - acked)[:5]}, "
        f"{sorted(reported - acked)[:5]}; Alice read until {pair.alice_ended}\n" + _stop_log(relay)
    )
    late = [mid for mid in acked if pair.written_at[mid] > term + LOG_GRAIN]
    assert not late, f"acknowledged after the stop: {late[:5]}"
    numbers = [int(mid.split("-")[1]) for mid in pair.delivered]
    assert numbers == list(range(len(numbers)))
    assert all(status.split()[1] != b"200" for _, status in pair.reported)
    assert len(pair.delivered) > pair.before, (pair.index, pair.before)


def _together(relay: Relay, pairs: list[Pair]) -> list[bool]:
    """Whether each pair's ends are on one worker (a connection moving is on neither)."""
    owners = _owners_now(relay)
    ends = [(owners.get(_port(pair.alice)), owners.get(_port(pair.bob))) for pair in pairs]
    return [alice is not None and alice == bob for alice, bob in ends]


def _colocate(relay: Relay, pairs: list[Pair], limit: float = 30.0) -> None:
    """Until every pair is on one worker, twice in a row more than colocate.RETRY apart (a
    move decided before may still come). A move waits for a moment when its connection has
    nothing left to write: the trickle gives every pair one, a flood would not."""
    deadline, settled = time.monotonic() + limit, False
    while True:
        together = all(_together(relay, pairs))
        if together and settled:
            return
        settled = together
        assert time.monotonic() < deadline, f"not colocated: {_together(relay, pairs)}"
        time.sleep(1.2 if together else 0.1)


def _owners_now(relay: Relay) -> dict[int, int]:
    """_owners, asked again while a worker is too busy to answer in time (a move, a flood)."""

    def owners() -> dict[int, int] | None:
        try:
            return _owners(relay, 2)
        except WorkerCtlError:
            return None

    found = wait_for(owners, 30, "the workers' answers")
    assert isinstance(found, dict)
    return found


def _wait_stalled(pairs: list[Pair], quiet: float = 1.0, limit: float = 60.0) -> None:
    """Wait until no Alice has begun a SEND for `quiet` seconds (at least 2 s in all)."""
    began = time.monotonic()
    counts = [len(pair.written_at) for pair in pairs]
    since = began
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        latest = [len(pair.written_at) for pair in pairs]
        if latest != counts:
            counts, since = latest, now
        elif now - since >= quiet and now - began >= 2.0:
            print(f"every Alice stalled {now - began:.1f} s after the receivers stopped reading")
            return
        assert now - began < limit, f"the senders never stalled: {counts}"


STOP_LINE = re.compile(r"worker \d+: stopping, reading no new frame")


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


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
    words = ("stop", "WARNING", "ERROR", "handoff link")
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
    tid, frame = alice.binary_send(bob, body, "big")
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
    answer = alice.recv(timeout=10).frame
    assert (answer.tid, answer.code) == (tid, 200)  # sent once the end-line was in (item 10)
    with contextlib.suppress(EOFError, OSError):
        extra = bob.recv(timeout=15)
        raise AssertionError(f"Bob got a frame read after the stop: {extra.frame.buf[:80]!r}")
    with contextlib.suppress(EOFError, OSError):
        answer = alice.recv(timeout=15)
        assert answer.frame.tid != late, "a SEND written after the stop was answered"
        raise AssertionError(f"unexpected frame for Alice: {answer.frame.buf[:80]!r}")
    wait_for(lambda: exited(supervisor), 15, "the supervisor to exit")  # reaped or not
    alice.close()
    bob.close()
