"""A worker SIGKILLed with live sessions (issue 12 item 1): nothing of its goes to anyone else.

1. Bob AUTHs; his worker is SIGKILLed and respawned; new plain connections are opened until
   six of them are served by the respawned worker (which hands out connection ids again);
   Alice sends to Bob's dead session: she gets 481 and none of the new connections gets
   anything.
2. Under load: 20 Alice/Bob pairs exchange SENDs without pause (each body names its
   receiver and a sequence number) while one of four workers is SIGKILLed every 2 s, five
   times; whoever lost their connection reconnects, AUTHs again and goes on. No message may
   reach a connection it was not meant for, what arrives arrives once and in order, 1 s
   after each respawn every cmap entry names a live connection that holds that session, and
   a SEND to each session that died with its worker is answered 481.
3. A worker of a retiring generation killed while it drains: its sessions go with it too.
4. A worker killed while it relays a streamed frame to another worker's connection: the
   frame is ended there, and that connection goes on receiving.
5. A reload while a dead worker's respawn waits out its backoff: one worker per slot.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, cast

import trustme

from msrpd.control.client import call
from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.protocol.writer import build_request

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for


def ctl(relay: Relay, method: str) -> Any:
    return call(relay.settings(), method)


def port_of(client: MsrpClient) -> int:
    return int(client.sock.getsockname()[1])


def conn_rows(relay: Relay) -> list[dict[str, Any]]:
    """msrp.conns, once every worker answered it."""

    def answered() -> tuple[list[dict[str, Any]]] | None:
        # A worker that exits (a drained one) may be asked before it is reaped: ask again.
        rows: list[dict[str, Any]] = ctl(relay, "msrp.conns")
        return None if any("error" in row for row in rows) else (rows,)

    return cast(tuple[list[dict[str, Any]]], wait_for(answered, 5, "every worker's answer"))[0]


def served_by(relay: Relay) -> dict[int, dict[str, Any]]:
    """Local port of each client connection -> its msrp.conns row (pid, conid, sessions)."""
    return {int(row["peer"].rsplit(":", 1)[1]): row for row in conn_rows(relay)}


def rows_for(relay: Relay, clients: list[MsrpClient]) -> dict[int, dict[str, Any]]:
    """served_by(), once every one of `clients` is served somewhere."""
    ports = {port_of(c) for c in clients}

    def listed() -> dict[int, dict[str, Any]] | None:
        rows = served_by(relay)
        return rows if ports <= set(rows) else None

    return cast(dict[int, dict[str, Any]], wait_for(listed, 5, "the connections to be served"))


def running_workers(relay: Relay) -> dict[int, dict[str, Any]]:
    """pid -> core.ps row of every worker that runs (accepts)."""
    rows = ctl(relay, "core.ps")
    return {r["pid"]: r for r in rows if r["role"] != "supervisor" and r["state"] == "running"}


def kill_and_wait_for_successor(relay: Relay, victim: int, children: int) -> int:
    """SIGKILL worker `victim`; the pid of the worker that replaces it, once it runs."""
    slot = running_workers(relay)[victim]["slot"]
    os.kill(victim, signal.SIGKILL)

    def successor() -> int | None:
        workers = running_workers(relay)
        if victim in workers or len(workers) != children:
            return None
        return next((pid for pid, row in workers.items() if row["slot"] == slot), None)

    return int(str(wait_for(successor, 10, "a respawned worker")))


def authed(relay: Relay, user: str) -> MsrpClient:
    client = MsrpClient(relay.port)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def test_dead_session_gets_481_and_its_connection_id_is_not_reused(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0, relay.log()
    bob = authed(relay, "bob")
    sessid = (bob.use_path or "").rsplit("/", 1)[1].split(";")[0]
    row = served_by(relay)[port_of(bob)]
    assert sessid in row["sessions"]
    old_conid = row["conid"]
    successor = kill_and_wait_for_successor(relay, row["pid"], 2)

    # Plain connections until six are served by the respawned worker (SO_REUSEPORT and
    # accept balancing decide where each lands); the others stay open too.
    plain: list[MsrpClient] = []
    on_successor = 0
    while on_successor < 6 and len(plain) < 60:
        plain.append(MsrpClient(relay.port))
        owners = rows_for(relay, plain)
        on_successor = sum(owners[port_of(c)]["pid"] == successor for c in plain)
    assert on_successor >= 6

    alice = authed(relay, "alice")
    tid = alice.send_message(bob, b"for bob only")
    answer = alice.recv()
    assert (answer.frame.tid, answer.frame.code) == (tid, 481)
    for client in plain:
        try:
            got = client.recv(timeout=0.3)
        except TimeoutError:
            continue
        raise AssertionError(f"a stranger's connection received {got.frame.buf[:200]!r}")
    # No live connection carries the dead one's id, and its session is gone.
    assert old_conid not in {r["conid"] for r in owners.values()}
    cmap = ctl(relay, "msrp.cmaplist")
    assert sessid not in {c["CONDATA"]["SESSIONID"] for c in cmap["CONLIST"]}
    for client in [alice, bob, *plain]:
        client.close()


# -- under load ----------------------------------------------------------------------------

PAIRS = 20
KILLS = 5
KILL_EVERY = 2.0
SETTLE = 1.0  # after a respawn, before the cmap and the dead sessions are checked
_BODY = re.compile(rb"to=(\S+) from=(\S+) seq=(\d+)")


@dataclass(eq=False)
class Peer:
    """One connection of one side of a pair (a side gets a new Peer when it reconnects)."""

    name: str
    use_path: str
    uri: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    alive: bool = True
    waiting: dict[bytes, asyncio.Future[int]] = field(default_factory=dict)


@dataclass(eq=False)
class Side:
    """Alice or Bob of one pair, across reconnects."""

    pair: int
    user: str
    current: Peer | None = None
    epoch: int = 0
    next_seq: int = 0
    got: list[int] = field(default_factory=list)
    """Sequence numbers received from the other side, in arrival order."""
    got_at: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)


@dataclass
class Ledger:
    """What every test client saw."""

    misdelivered: list[tuple[str, bytes]] = field(default_factory=list)
    died: list[Peer] = field(default_factory=list)
    reports: int = 0
    timeouts: int = 0


def _connect(port: int, user: str) -> tuple[MsrpClient, list[object]]:
    client = MsrpClient(port)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client, list(client.reader.events())  # anything after the 200 was not asked for


class Load:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.ledger = Ledger()
        self.stop = asyncio.Event()
        self.sides = [(Side(n, "alice"), Side(n, "bob")) for n in range(PAIRS)]
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, side: Side) -> None:
        client, extra = await asyncio.to_thread(_connect, self.relay.port, side.user)
        side.epoch += 1
        name = f"p{side.pair}{side.user[0]}{side.epoch}"
        for event in extra:
            self.ledger.misdelivered.append((name, repr(event).encode()))
        reader, writer = await asyncio.open_connection(sock=client.sock.dup())
        client.sock.close()
        peer = Peer(name, client.use_path or "", client.uri, reader, writer)
        side.current = peer
        self.spawn(self.read(side, peer))

    async def read(self, side: Side, peer: Peer) -> None:
        parser = FrameReader()
        try:
            while data := await peer.reader.read(1 << 16):
                parser.receive_data(data)
                for event in parser.events():
                    if isinstance(event, Frame):
                        self.on_frame(side, peer, event)
        except (ConnectionError, OSError):
            pass
        peer.alive = False
        peer.writer.close()
        for future in peer.waiting.values():
            if not future.done():
                future.set_result(0)
        if self.stop.is_set():
            return
        self.ledger.died.append(peer)
        await self.connect(side)  # and go on, under a new name

    def on_frame(self, side: Side, peer: Peer, frame: Frame) -> None:
        if frame.method is None:  # our SEND's response
            future = peer.waiting.pop(frame.tid, None)
            if future is not None and not future.done():
                future.set_result(frame.code or 0)
            return
        if frame.method == b"REPORT":
            self.ledger.reports += 1  # a failure REPORT for a SEND that died in flight
            return
        body = bytes(frame.body or b"")
        match = _BODY.fullmatch(body)
        if match is None or match[1].decode() != peer.name:
            self.ledger.misdelivered.append((peer.name, body))
            return
        side.got.append(int(match[3]))
        side.got_at.append(time.monotonic())

    async def send(self, side: Side, other: Side) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            me, to = side.current, other.current
            if me is None or to is None or not me.alive or not to.alive:
                await asyncio.sleep(0.02)
                continue
            seq = side.next_seq
            side.next_seq += 1
            body = b"to=%s from=%s seq=%d" % (to.name.encode(), me.name.encode(), seq)
            tid = b"%s-%d" % (me.name.encode(), seq)
            headers = [("Message-ID", tid.decode()), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
            future: asyncio.Future[int] = loop.create_future()
            me.waiting[tid] = future
            me.writer.write(
                build_request(tid, b"SEND", [to.use_path, to.uri], [me.uri], headers, body)
            )
            try:
                code = await asyncio.wait_for(future, 5)
            except TimeoutError:
                self.ledger.timeouts += 1
                me.waiting.pop(tid, None)
                continue
            side.codes[code] = side.codes.get(code, 0) + 1


def _probe(port: int, peer: Peer) -> int:
    """A SEND from a stranger to a dead peer's session: the status it gets."""
    with MsrpClient(port) as probe:
        body = f"to=probe-{peer.name} from=probe seq=0".encode()
        tid = probe.request("SEND", f"{peer.use_path} {peer.uri}", [], body)
        answer = probe.recv()
        assert answer.frame.tid == tid
        return answer.frame.code or 0


def _stale_entries(relay: Relay) -> list[dict[str, Any]]:
    """cmap entries whose CONID is not a live connection holding that session."""
    before = conn_rows(relay)
    entries = ctl(relay, "msrp.cmaplist")["CONLIST"]
    after = conn_rows(relay)
    live = {(int(r["conid"], 16), s) for r in before + after for s in r["sessions"]}
    return [
        e["CONDATA"]
        for e in entries
        if (e["CONDATA"]["CONID"], e["CONDATA"]["SESSIONID"]) not in live
    ]


def _victim(relay: Relay) -> int:
    """The running worker that serves the most sessions."""
    load = dict.fromkeys(running_workers(relay), 0)
    for row in served_by(relay).values():
        if row["pid"] in load:
            load[row["pid"]] += len(row["sessions"])
    return max(load, key=lambda pid: load[pid])


def test_workers_killed_under_load_misdeliver_nothing(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=4)
    assert relay.start().returncode == 0, relay.log()
    load = Load(relay)
    stale: list[dict[str, Any]] = []
    probes: list[tuple[str, int]] = []
    respawned: list[float] = []

    async def main() -> None:
        await asyncio.gather(*(load.connect(side) for pair in load.sides for side in pair))
        for alice, bob in load.sides:
            load.spawn(load.send(alice, bob))
            load.spawn(load.send(bob, alice))
        await asyncio.sleep(1.0)
        for _ in range(KILLS):
            kill_at = time.monotonic()
            died_before = len(load.ledger.died)
            victim = await asyncio.to_thread(_victim, relay)
            await asyncio.to_thread(kill_and_wait_for_successor, relay, victim, 4)
            respawned.append(time.monotonic())
            await asyncio.sleep(SETTLE)
            found = await asyncio.to_thread(_stale_entries, relay)
            if found:  # a connection caught between two workers by the snapshots: look again
                await asyncio.sleep(0.3)
                again = await asyncio.to_thread(_stale_entries, relay)
                found = [e for e in found if e in again]
            stale.extend(found)
            for peer in load.ledger.died[died_before:]:
                probes.append((peer.name, await asyncio.to_thread(_probe, relay.port, peer)))
            await asyncio.sleep(max(0.0, kill_at + KILL_EVERY - time.monotonic()))
        await asyncio.sleep(1.0)
        load.stop.set()
        await asyncio.sleep(1.0)  # frames in flight arrive
        for alice, bob in load.sides:
            for side in (alice, bob):
                if side.current is not None:
                    side.current.writer.close()
        for task in list(load.tasks):
            task.cancel()

    started = time.monotonic()
    asyncio.run(main())
    ledger = load.ledger
    sent = sum(side.next_seq for pair in load.sides for side in pair)
    received = sum(len(side.got) for pair in load.sides for side in pair)
    codes: dict[int, int] = {}
    for side in (side for pair in load.sides for side in pair):
        for code, n in side.codes.items():
            codes[code] = codes.get(code, 0) + n
    print(
        f"{sent} SENDs (answers {codes}), {received} delivered, "
        f"{len(ledger.misdelivered)} misdelivered, {len(ledger.died)} connections died, "
        f"{ledger.reports} REPORTs, {ledger.timeouts} timeouts, probes {probes}, "
        f"in {time.monotonic() - started:.1f} s"
    )
    assert ledger.misdelivered == []
    for alice, bob in load.sides:
        for side in (alice, bob):
            assert side.got == sorted(set(side.got)), f"pair {side.pair} {side.user}: order"
            # Every pair goes on after the last respawn, both ways.
            assert any(t > respawned[-1] for t in side.got_at), f"pair {side.pair} stopped"
    assert stale == []
    assert len(probes) >= KILLS and all(code == 481 for _, code in probes), probes
    assert len(respawned) == KILLS


def test_sessions_of_a_killed_draining_worker_are_purged(make_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Bob (TLS: his connection stays with the worker that accepted it) AUTHs; a reload
    retires that worker; it is SIGKILLed while draining: Bob's session goes with it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    tls = {"certificate": str(cert_file), "private_key": str(key_file)}
    relay: Relay = make_relay(children=2, core={"drain_timeout": 30}, tls=tls)
    assert relay.start().returncode == 0, relay.log()
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    bob = MsrpClient(relay.tls_port or 0, tls=client_tls)
    assert bob.auth("bob", PASSWORDS["bob"], REALM).frame.code == 200
    sessid = (bob.use_path or "").rsplit("/", 1)[1].split(";")[0]
    victim = served_by(relay)[port_of(bob)]["pid"]
    assert relay.cli("reload").returncode == 0

    def draining() -> bool:
        rows = {r["pid"]: r for r in ctl(relay, "core.ps")}
        new = [r for r in rows.values() if r["generation"] == 2 and r["state"] == "running"]
        return len(new) == 2 and rows.get(victim, {}).get("state") == "draining"

    wait_for(draining, 10, "the new generation, Bob's worker draining")
    row = served_by(relay)[port_of(bob)]
    assert (row["pid"], row["generation"]) == (victim, 1) and sessid in row["sessions"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in {r["pid"] for r in ctl(relay, "core.ps")}, 10, "the reap")
    cmap = ctl(relay, "msrp.cmaplist")
    assert sessid not in {c["CONDATA"]["SESSIONID"] for c in cmap["CONLIST"]}
    alice = authed(relay, "alice")
    tid = alice.send_message(bob, b"for bob only")
    answer = alice.recv()
    assert (answer.frame.tid, answer.frame.code) == (tid, 481)
    alice.close()
    bob.close()


def test_a_stream_cut_by_its_workers_death_is_ended_and_the_receiver_goes_on(make_relay) -> None:  # type: ignore[no-untyped-def]
    """Alice's worker relays her streamed SEND to Bob on the other worker and is SIGKILLed
    in the middle: Bob's frame is ended with `#` (RFC 4975 §7.1) and the next SEND for Bob
    reaches him (his connection no longer waits for the rest of a frame that never comes)."""
    relay: Relay = make_relay(children=2, msrp={"max_body": 1024})
    assert relay.start().returncode == 0, relay.log()
    clients = [authed(relay, "alice" if i % 2 else "bob") for i in range(8)]
    owners = served_by(relay)
    by_worker: dict[int, list[MsrpClient]] = {}
    for client in clients:
        by_worker.setdefault(owners[port_of(client)]["pid"], []).append(client)
    assert len(by_worker) == 2, "accept balancing uses both workers"
    (alice_worker, (alice, *_)), (_, (bob, *_)) = by_worker.items()
    head = (
        f"MSRP big1 SEND\r\nTo-Path: {bob.use_path} {bob.uri}\r\nFrom-Path: {alice.uri}\r\n"
        "Message-ID: big\r\nByte-Range: 1-*/1000000\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    alice.send_raw(head + b"x" * 200_000)  # no end-line: the frame is still coming
    events: list[object] = []
    reader = FrameReader(ReaderLimits(max_body=1024))
    body = 0
    while body < 100_000:
        reader.receive_data(bob.sock.recv(1 << 16))
        events += reader.events()
        body = sum(len(e.data) for e in events if isinstance(e, BodyPiece))
    kill_and_wait_for_successor(relay, alice_worker, 2)
    carol = authed(relay, "alice")
    tid = carol.send_message(bob, b"after the crash")
    assert carol.recv().frame.code == 200
    bob.sock.settimeout(10)
    while not any(isinstance(e, Frame) and e.tid == tid for e in events):
        data = bob.sock.recv(1 << 16)
        assert data, "the relay closed Bob's connection"
        reader.receive_data(data)
        events += reader.events()
    first, *pieces, end, last = events
    assert isinstance(first, Frame) and first.tid == b"big1" and first.streamed
    assert all(isinstance(p, BodyPiece) for p in pieces)
    assert isinstance(end, FrameEnd) and (end.tid, end.flag) == (b"big1", b"#")
    assert isinstance(last, Frame) and bytes(last.body or b"") == b"after the crash"
    for client in [*clients, carol]:
        client.close()


YOUNG_KILLS = 4
"""Slot 0 successors killed young in a row: the last one's respawn waits 2 s at least
(backoffs 0.25, 0.5, 1, 2 s, doubled once more if the first worker died young too)."""


def test_a_reload_during_a_respawn_backoff_starts_each_slot_once(make_relay) -> None:  # type: ignore[no-untyped-def]
    """A worker that dies young is respawned after a backoff; a reload within it starts the
    new generation's worker for that slot, and the pending respawn must not start a second
    one (two workers of one (slot, generation) would hand out the same connection ids).
    Slot 0's successors are killed as soon as they appear, until its backoff is 2 s or
    more; the reload comes at once, well within it, and the log must show each slot of each
    generation started exactly as often as it should."""
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0, relay.log()
    rows = running_workers(relay)
    (other,) = [pid for pid, row in rows.items() if row["slot"] == 1]
    victim = next(pid for pid, row in rows.items() if row["slot"] == 0)
    killed: set[int] = set()

    def deaths() -> int:
        return len(re.findall(r"worker 0 \(pid \d+\) died", relay.log()))

    for young in range(YOUNG_KILLS + 1):
        if young:
            new = wait_for(lambda: relay.worker_pids() - killed - {other}, 10, "a successor")
            assert isinstance(new, set) and len(new) == 1
            (victim,) = new
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
        wait_for(lambda: deaths() == len(killed), 5, "the death to be seen")
    # Its respawn waits 2 s at least: reload now.
    relay.supervisor().send_signal(signal.SIGHUP)

    def settled() -> list[tuple[int, int]] | None:
        rows = [r for r in ctl(relay, "core.ps") if r["role"] != "supervisor"]
        if any(r["state"] != "running" for r in rows) or len(rows) < 2:
            return None
        return sorted((r["slot"], r["generation"]) for r in rows)

    wait_for(lambda: settled() == [(0, 2), (1, 2)], 15, "generation 2 alone")
    time.sleep(4.0 + 2.0)  # the pending respawn's backoff (at most 4 s), a tick, a margin
    assert settled() == [(0, 2), (1, 2)], relay.log()
    log = relay.log()
    starts = re.findall(r"worker (\d) \(generation (\d+)\) started", log)
    counts = {key: starts.count(key) for key in set(starts)}
    assert counts == {("0", "1"): len(killed), ("1", "1"): 1, ("0", "2"): 1, ("1", "2"): 1}, log
