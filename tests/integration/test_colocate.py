"""Colocation (msrpd/workers/migrate/colocate.py) with real workers, sockets and shared memory.

Every pair starts split over the two workers (paired after connecting, by asking the workers
which connections they own). While Alice and Bob flood each other (so both ends want to
move), one end of each pair moves to the other's worker. Every message must arrive
exactly once and in order, whole frames and streamed ones alike, and at the end both ends
of every pair are served by one worker, with the workers still within a pair of each other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from msrpd.control.workerctl import query_worker
from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.protocol.writer import build_reply, build_request
from msrpd.rundir import ctl_path, layout_for
from msrpd.shm import ShmSet
from msrpd.workers.migrate.handover import MOVED_TIMEOUT

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for
from .test_balance import COUNTERS_PUBLISHED, _open_counts, _running_records, _started, _stat
from .test_crash import running_workers
from .test_relaying import exchange

MESSAGES = 400
WINDOW = 16
BIG = 200_000  # over the relay's whole-frame limit: relayed as a stream of pieces


def _owners(relay: Relay, children: int) -> dict[int, int]:
    """Local port of each client connection -> the worker slot that serves it."""
    run_dir = relay.settings().core.run_dir
    owners: dict[int, int] = {}
    for slot in range(children):
        for conn in query_worker(ctl_path(run_dir, slot, 1), "conns"):
            owners[int(conn["peer"].rsplit(":", 1)[1])] = slot
    return owners


def _port(client: MsrpClient) -> int:
    return int(client.sock.getsockname()[1])


def _body(pair: int, i: int) -> bytes:
    size = BIG if i % 50 == 7 else 100 + i % 900
    return (b"pair %d message %d " % (pair, i)).ljust(size, b"x")


class _End:
    """One client of a pair over asyncio: sends its SENDs with a window (acknowledged by the
    relay's 200s) and collects the peer's SENDs, answering each with a 200 (RFC 4975 §7.2:
    the relay takes it, as the previous hop)."""

    def __init__(self, client: MsrpClient, prefix: bytes) -> None:
        self.client, self.prefix = client, prefix
        self.parser = FrameReader(ReaderLimits(max_body=1 << 20))
        self.got: list[bytes] = []
        self.acked = 0
        self.codes: set[int] = set()
        self.piece = bytearray()
        self.progress = asyncio.Event()

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(sock=self.client.sock.dup())

    async def read(self, expect: int, sending: int) -> None:
        while len(self.got) < expect or self.acked < sending:
            data = await asyncio.wait_for(self.r.read(1 << 16), 30)
            assert data, "relay closed a connection"
            self.parser.receive_data(data)
            for event in self.parser.events():
                self._event(event)
            self.progress.set()

    def _event(self, event: object) -> None:
        if isinstance(event, BodyPiece):
            self.piece += event.data
        elif isinstance(event, FrameEnd):
            self.got.append(bytes(self.piece))
            self.piece.clear()
        elif isinstance(event, Frame) and event.code is not None:
            self.codes.add(event.code)
            self.acked += event.tid.startswith(self.prefix)
        elif isinstance(event, Frame):
            assert event.method == b"SEND", event
            self.w.write(build_reply(event, 200, "OK"))
            if not event.streamed:
                self.got.append(bytes(event.body or b""))

    async def send(self, to: MsrpClient, bodies: list[bytes]) -> None:
        to_path = [to.use_path or "", to.uri]
        for i, body in enumerate(bodies):
            headers = [("Message-ID", f"m{i}"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
            tid = self.prefix + b"%d" % i
            self.w.write(build_request(tid, b"SEND", to_path, [self.client.uri], headers, body))
            while i - self.acked >= WINDOW:
                self.progress.clear()
                await self.progress.wait()
        await self.w.drain()


async def _pair(alice: MsrpClient, bob: MsrpClient, n: int) -> None:
    """Alice and Bob flood each other at once."""
    a, b = _End(alice, b"a"), _End(bob, b"b")
    await a.open()
    await b.open()
    to_bob = [_body(n, i) for i in range(MESSAGES)]
    to_alice = [_body(n + 100, i) for i in range(MESSAGES)]
    await asyncio.gather(
        a.read(MESSAGES, MESSAGES),
        b.read(MESSAGES, MESSAGES),
        a.send(bob, to_bob),
        b.send(alice, to_alice),
    )
    assert b.got == to_bob, f"pair {n}: Alice's messages lost, doubled or out of order"
    assert a.got == to_alice, f"pair {n}: Bob's messages lost, doubled or out of order"
    assert a.codes == b.codes == {200}
    for end in (a, b):
        end.w.close()


def _split_pairs(relay: Relay, pairs: int) -> list[tuple[MsrpClient, MsrpClient]]:
    """Connect 2 * pairs clients and pair each one on worker 0 with one on worker 1."""
    clients = []
    for n in range(2 * pairs):  # one after the other: a burst of accepts can overshoot by a few
        client = MsrpClient(relay.port, timeout=10)
        user = "alice" if n % 2 else "bob"
        assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        clients.append(client)
    owners = _owners(relay, 2)
    by_worker = [[c for c in clients if owners[_port(c)] == slot] for slot in (0, 1)]
    assert [len(w) for w in by_worker] == [pairs, pairs], "accept balancing split them evenly"
    return list(zip(by_worker[0], by_worker[1], strict=True))


def _flood(pairs: list[tuple[MsrpClient, MsrpClient]]) -> None:
    async def main() -> None:
        await asyncio.gather(*(_pair(a, b, n) for n, (a, b) in enumerate(pairs)))

    asyncio.run(main())


def test_split_pairs_move_together_and_lose_nothing(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay, shm = _started(make_relay, 2)
    try:
        pairs = _split_pairs(relay, 4)
        # Rounds of flooding (each checked for order) until every pair is on one worker: a
        # move waits for a moment when its connection has nothing left to write.
        deadline = time.monotonic() + 20
        rounds = 0
        while True:
            _flood(pairs)
            rounds += 1
            owners = _owners(relay, 2)
            if all(owners[_port(a)] == owners[_port(b)] for a, b in pairs):
                break
            assert time.monotonic() < deadline, f"not colocated after {rounds} rounds: {owners}"
        print(f"colocated after {rounds} rounds of {8 * MESSAGES} messages")
        counts = _open_counts(shm)
        assert sum(counts) == 8 and counts[-1] - counts[0] <= 2, counts
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_moved") >= 4
        assert _stat(shm, "relay_fail") == 0
        assert "no RELEASE" not in relay.log() and "never answered" not in relay.log()
        _close(pairs, shm)
    finally:
        shm.close()


def test_balance_off_moves_nothing(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, core={"balance": False})
    assert relay.start().returncode == 0, relay.log()
    shm = layout_for(relay.settings()).attach_all()
    try:
        time.sleep(COUNTERS_PUBLISHED)
        clients = [MsrpClient(relay.port, timeout=10) for _ in range(8)]
        for n, client in enumerate(clients):
            user = "alice" if n % 2 else "bob"
            assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        pairs = list(zip(clients[0::2], clients[1::2], strict=True))
        _flood(pairs)
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_moved") == _stat(shm, "conns_passed") == 0
        _close(pairs, shm)
    finally:
        shm.close()


def _close(pairs: list[tuple[MsrpClient, MsrpClient]], shm: ShmSet) -> None:
    for alice, bob in pairs:
        alice.close()
        bob.close()
    wait_for(lambda: sum(_open_counts(shm)) == 0, what="every connection closed")
    # Sessions went with their connections, wherever they were served at the end.
    wait_for(lambda: shm.cmap.count() == 0, what="every session removed")


def test_a_slow_new_owner_still_gets_the_sessions_of_a_connection(make_relay) -> None:  # type: ignore[no-untyped-def]
    """Alice moves to Bob's worker while that worker is stopped (SIGSTOP) for longer than
    MOVED_TIMEOUT: her old worker must not remove her sessions meanwhile (the new owner is
    slow, not dead). Once it runs again it takes her over, and frames go both ways, in
    order, none lost."""
    relay: Relay = make_relay(children=2, core={"heartbeat_timeout": 60})
    assert relay.start().returncode == 0, relay.log()
    shm = layout_for(relay.settings()).attach_all()
    stopped = 0
    try:
        wait_for(lambda: len(_running_records(shm)) == 2, what="workers running")
        time.sleep(COUNTERS_PUBLISHED)  # each worker has seen the other RUNNING
        ((alice, bob),) = _split_pairs(relay, 1)
        run_dir = relay.settings().core.run_dir
        (stopped,) = [pid for pid, row in running_workers(relay).items() if row["slot"] == 1]
        os.kill(stopped, signal.SIGSTOP)

        def alice_left() -> bool:
            conns = query_worker(ctl_path(run_dir, 0, 1), "conns")
            return _port(alice) not in {int(c["peer"].rsplit(":", 1)[1]) for c in conns}

        sent: list[bytes] = []
        while not alice_left():  # she relays to Bob's worker: she moves there
            assert len(sent) < 100, "Alice did not move"
            sent.append(b"to bob %d" % len(sent))
            tid = alice.send_message(bob, sent[-1], f"m{len(sent)}")
            ok = alice.recv()
            assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
            time.sleep(0.05)
        time.sleep(MOVED_TIMEOUT + 2.0)  # her old worker's wait, a tick and a margin
        os.kill(stopped, signal.SIGCONT)
        stopped = 0
        got = [bob.recv(timeout=10).body for _ in sent]
        assert got == sent, "Alice's messages lost, doubled or reordered"
        wait_for(lambda: _port(alice) in _owners(relay, 2), 10, "Alice served again")
        assert _owners(relay, 2)[_port(alice)] == 1
        exchange(bob, alice, b"her session survived the slow move")
        exchange(alice, bob, b"and hers to him")
        log = relay.log()
        assert "no MOVED yet" in log and "never answered" not in log
        alice.close()
        bob.close()
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        shm.close()


def test_a_move_gives_a_sender_no_fresh_burst(make_relay) -> None:  # type: ignore[no-untyped-def]
    """session_frame_rate 20 with a 0.5 s burst (10 frames): Alice writes 20 SENDs at once to
    Carol, on her worker, then 40 to Bob, on the other worker: all 60 take (60 - 10 - 1) / 20
    = 2.45 s to be read, though her connection moves to Bob's worker on the way: its
    buckets' levels move with it (buckets made full there would let up to 10 more through at
    once, when it moves between two reads: about 1 run in 3). Every SEND is answered 200 and
    delivered once, in order. tests/workers/test_ratemove.py checks the levels themselves."""
    relay: Relay = make_relay(children=2, limits={"session_frame_rate": 20.0, "rate_burst": 0.5})
    assert relay.start().returncode == 0, relay.log()
    shm = layout_for(relay.settings()).attach_all()
    try:
        wait_for(lambda: len(_running_records(shm)) == 2, what="workers running")
        time.sleep(COUNTERS_PUBLISHED)  # each worker has seen the other RUNNING
        pairs = _split_pairs(relay, 2)
        (bob, alice), (_, carol) = pairs  # Alice and Carol on one worker, Bob on the other
        started = time.monotonic()
        to = [carol] * 20 + [bob] * 40
        tids = [alice.send_message(dest, b"n%02d" % i, f"m{i}") for i, dest in enumerate(to)]
        answers = [alice.recv(timeout=20).frame for _ in range(60)]
        took = time.monotonic() - started
        assert [(f.tid, f.code) for f in answers] == [(tid, 200) for tid in tids]
        for dest, first, n in ((carol, 0, 20), (bob, 20, 40)):
            got = [dest.recv(timeout=10).body for _ in range(n)]
            assert got == [b"n%02d" % i for i in range(first, first + n)]
            with pytest.raises(TimeoutError):
                dest.recv(timeout=0.3)  # once each
        owners = _owners(relay, 2)
        print("TOOK", took, owners, _port(alice), _port(bob))
        assert owners[_port(alice)] == owners[_port(bob)] != owners[_port(carol)], owners
        assert took >= 2.2, took
        _close(pairs, shm)
    finally:
        shm.close()
