"""Reload keeps every session (issue 12, item 4), with real processes, sockets and reloads.

`msrpd reload` starts a new generation of workers; the old one hands its plain TCP
connections, with their sessions and reader state, to the new one and exits. Checked with
1,000 idle authenticated sessions and 10 pairs sending all along, over three reloads: no
session is dropped (each still gets a SEND after the last reload, once drain_timeout has
passed since), every SEND arrives once and in order after its 200, and the old generations'
processes are gone. A TLS connection cannot move: it stays with its old worker, which keeps
relaying for it past drain_timeout until it closes, or until retire_timeout ends it. A
connection the relay opened to a next hop is left to the new generation, which opens its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import trustme

from msrpd.control.workerctl import query_worker
from msrpd.protocol import Frame, FrameReader, ReaderLimits
from msrpd.protocol.writer import build_reply, build_request
from msrpd.rundir import ctl_path, layout_for
from msrpd.shm import WorkerState

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, title, wait_for
from .test_relaying import authed, exchange

IDLE = 1000
PAIRS = 10
RELOADS = 3
DRAIN = 2.0  # drain_timeout: small, to show that it no longer ends a reload's sessions
INTERVAL = 0.02  # seconds between two SENDs of one end of a pair
WINDOW = 8  # SENDs one end may have unanswered


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for the clients' sockets here and the relay's (it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * (IDLE + 2 * PAIRS) + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.fail(f"the hard limit on open files ({hard}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _authenticated(port: int, n: int) -> list[MsrpClient]:
    clients = []
    for i in range(n):
        client = MsrpClient(port, timeout=10)
        user = "alice" if i % 2 else "bob"
        assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        clients.append(client)
    return clients


class _Peer:
    """One client over asyncio. Collects the SENDs it gets and the relay's answers to its
    own; an EOF from the relay is a dropped session."""

    def __init__(self, client: MsrpClient) -> None:
        self.client = client
        self.parser = FrameReader(ReaderLimits(max_body=1 << 20))
        self.got: list[tuple[bytes, bytes, list[str]]] = []
        """SENDs received: (tid, body, To-Path)."""
        self.acked: set[bytes] = set()
        """tids of its SENDs answered 200."""
        self.refused: list[tuple[bytes, int]] = []
        self.eof = False
        self.progress = asyncio.Event()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.client.sock)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            try:
                data = await self.reader.read(1 << 16)
            except ConnectionError:
                data = b""
            if not data:
                self.eof = True
                self.progress.set()
                return
            self.parser.receive_data(data)
            for event in self.parser.events():
                assert isinstance(event, Frame), event
                if event.code is None:
                    to_path = [str(uri) for uri in event.to_path]
                    self.got.append((event.tid, bytes(event.body or b""), to_path))
                elif event.code == 200:
                    self.acked.add(event.tid)
                else:
                    self.refused.append((event.tid, event.code))
            self.progress.set()

    def send(self, to: MsrpClient, tid: bytes, body: bytes) -> None:
        headers = [("Message-ID", tid.decode()), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        to_path = [to.use_path or "", to.uri]
        self.writer.write(build_request(tid, b"SEND", to_path, [self.client.uri], headers, body))

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert not self.eof, f"the relay closed {self.client.uri} ({what})"
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}"
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), left)


def _body(tag: bytes, seq: int) -> bytes:
    # Every tenth is over the relay's max_body: relayed as a stream of pieces, during which
    # neither end can move.
    size = 5000 if seq % 10 == 9 else 200 + seq % 300
    return (b"%s %06d " % (tag, seq)).ljust(size, b"x")


async def _talk(src: _Peer, dst: _Peer, tag: bytes, stop: asyncio.Event) -> int:
    """`src` sends numbered SENDs to `dst` until `stop`, at most WINDOW unanswered; returns
    how many it sent."""
    seq = 0
    while not stop.is_set():
        await src.wait(lambda seq=seq: seq - len(src.acked) < WINDOW, f"200s for {tag!r}")
        src.send(dst.client, tag + b"-%d" % seq, _body(tag, seq))
        seq += 1
        await asyncio.sleep(INTERVAL)
    return seq


async def _check_talk(src: _Peer, dst: _Peer, tag: bytes, sent: int) -> None:
    """Every SEND got its 200 and arrived once, in order."""
    await src.wait(lambda: len(src.acked) == sent, f"all 200s for {tag!r}")
    await dst.wait(lambda: len(dst.got) >= sent, f"all of {tag!r} delivered")
    assert src.refused == []
    assert src.acked == {tag + b"-%d" % seq for seq in range(sent)}
    bodies = [body for _tid, body, _path in dst.got]
    assert bodies == [_body(tag, seq) for seq in range(sent)], (
        f"{tag!r}: lost, doubled or reordered"
    )


async def _until(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `check` without blocking the clients; how long it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s: {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _reload(relay: Relay) -> set[int]:
    """`msrpd reload`, until the new generation runs; the old workers' pids."""
    old = relay.worker_pids()
    result = await asyncio.to_thread(relay.cli, "reload")
    assert result.returncode == 0, result.stderr
    await _until(lambda: len(relay.worker_pids() - old) == 2, 15, "the new generation")
    return old


async def _retired(relay: Relay, old: set[int]) -> float:
    """How long until the `old` workers have exited."""
    return await _until(lambda: not relay.worker_pids() & old, 15, "the old generations to exit")


def _port(client: MsrpClient) -> int:
    return int(client.sock.getsockname()[1])


def _served_by(relay: Relay, generation: int) -> set[int]:
    """Local ports of the clients whose connections workers of `generation` serve."""
    run_dir = relay.settings().core.run_dir
    ports = set()
    for slot in range(2):
        for conn in query_worker(ctl_path(run_dir, slot, generation), "conns"):
            ports.add(int(conn["peer"].rsplit(":", 1)[1]))
    return ports


def test_three_reloads_keep_every_session_and_frame(make_relay, many_fds) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, core={"drain_timeout": DRAIN}, msrp={"max_body": 1024})
    assert relay.start().returncode == 0, relay.log()
    started = time.monotonic()
    idle = _authenticated(relay.port, IDLE)
    talkers = _authenticated(relay.port, 2 * PAIRS)
    print(f"{IDLE + 2 * PAIRS} sessions authenticated in {time.monotonic() - started:.1f} s")
    first = relay.worker_pids()
    shm = layout_for(relay.settings()).attach_all()

    async def main() -> None:
        idle_peers = [_Peer(c) for c in idle]
        peers = [_Peer(c) for c in talkers]
        for peer in idle_peers + peers:
            await peer.open()
        pairs = list(zip(peers[0::2], peers[1::2], strict=True))
        stop = asyncio.Event()
        talks = []
        for n, (alice, bob) in enumerate(pairs):
            talks.append(
                (alice, bob, b"a%d" % n, asyncio.create_task(_talk(alice, bob, b"a%d" % n, stop)))
            )
            talks.append(
                (bob, alice, b"b%d" % n, asyncio.create_task(_talk(bob, alice, b"b%d" % n, stop)))
            )
        await asyncio.sleep(1.0)
        # Three reloads while the pairs talk: the second as soon as the first's generation
        # runs (the first old one may hand over to workers that retire meanwhile), the third
        # once both old generations are gone.
        began = time.monotonic()
        retired = await _reload(relay)
        retired |= await _reload(relay)
        took = await _retired(relay, retired)
        print(f"reloads 1 and 2: both old generations gone {took:.2f} s after generation 3 ran")
        old = await _reload(relay)
        took = await _retired(relay, old)
        print(f"reload 3: the old generation handed over and exited in {took:.2f} s")
        retired |= old
        last = time.monotonic()
        assert last - began < 30, f"{RELOADS} reloads took {last - began:.1f} s"
        print(f"{RELOADS} reloads done, old generations gone, in {last - began:.1f} s")
        # drain_timeout (and a margin) passes since the last reload, and the pairs go on.
        await asyncio.sleep(DRAIN + 1.5)
        stop.set()
        for src, dst, tag, task in talks:
            sent = await task
            assert sent > 50, f"{tag!r} sent only {sent}"
            await _check_talk(src, dst, tag, sent)
        total = sum(len(src.acked) for src, *_ in talks)
        print(f"{total} SENDs acknowledged and delivered in order across {RELOADS} reloads")
        # Every idle session is still there, on the newest generation, and reachable.
        assert [p.client.uri for p in idle_peers if p.eof] == []
        assert shm.cmap.count() == IDLE + 2 * PAIRS
        newest = RELOADS + 1
        assert _served_by(relay, newest) == {_port(p.client) for p in idle_peers + peers}
        with authed(relay.port, "alice") as carol_client:
            carol = _Peer(carol_client)
            await carol.open()
            for i, peer in enumerate(idle_peers):
                carol.send(peer.client, b"i%d" % i, b"to idle session %d" % i)
            await carol.wait(lambda: len(carol.acked) == IDLE, "200s for the idle sessions")
            for i, peer in enumerate(idle_peers):
                await peer.wait(lambda peer=peer: len(peer.got) == 1, f"idle session {i}'s SEND")
                assert peer.got == [(b"i%d" % i, b"to idle session %d" % i, [peer.client.uri])]
            assert carol.refused == []
            carol.task.cancel()
            carol.writer.close()
        for peer in idle_peers + peers:
            assert not peer.eof, f"{peer.client.uri} was closed"
            peer.task.cancel()
            peer.writer.close()
        # The old generations' processes are gone; the newest one serves.
        assert not relay.worker_pids() & retired
        assert not [pid for pid in retired if psutil.pid_exists(pid)]
        assert retired >= first and len(retired) == 2 * RELOADS
        records = [r for r in shm.heartbeats.live() if r.pid != 0]
        assert {(r.generation, r.state) for r in records} == {(newest, WorkerState.RUNNING)}

    try:
        asyncio.run(main())
    finally:
        shm.close()
    log = relay.log()
    print(
        "\n".join(
            line
            for line in log.splitlines()
            if " retired: " in line or "fence" in line or "retiring:" in line
        )
    )
    assert "frames lost" not in log and "no RELEASE" not in log and "no MOVING" not in log


def _tls(tmp_path: Path) -> tuple[dict[str, object], ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return {"certificate": str(cert_file), "private_key": str(key_file)}, client_ctx


def _old_workers(relay: Relay, old: set[int]) -> list[psutil.Process]:
    return [p for p in relay.workers() if p.pid in old]


def test_tls_stays_with_its_old_worker_balance_off(make_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With `balance = false` the plain connections still move; the TLS one stays with its
    old worker, which is neither stopped nor killed after drain_timeout and still relays
    both ways, and exits once that connection closes."""
    tls, client_ctx = _tls(tmp_path)
    relay: Relay = make_relay(children=2, tls=tls, core={"drain_timeout": 1, "balance": False})
    assert relay.start().returncode == 0, relay.log()
    assert relay.tls_port is not None
    alice = authed(relay.tls_port, "alice", client_ctx)
    bob = authed(relay.port, "bob")
    idle = _authenticated(relay.port, 20)
    old = relay.worker_pids()
    assert relay.cli("reload").returncode == 0
    wait_for(lambda: len(relay.worker_pids() - old) == 2, 10, "the new generation")
    wait_for(lambda: len(_old_workers(relay, old)) == 1, 10, "the old worker without TLS to exit")
    time.sleep(1 + 1 + 1.5)  # drain_timeout, the supervisor's second and a margin
    (kept,) = _old_workers(relay, old)
    assert "(draining)" in title(kept)
    exchange(alice, bob, b"tls to a moved tcp session")
    exchange(bob, alice, b"and back to tls")
    for i, client in enumerate(idle):
        exchange(bob, client, b"idle %d" % i)
    alice.close()
    wait_for(lambda: not _old_workers(relay, old), 10, "the old worker to exit")
    for client in (bob, *idle):
        client.close()


def test_retire_timeout_ends_what_cannot_move(make_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """retire_timeout, set by the reload itself: the old worker keeping a TLS connection is
    stopped (not killed) that long after the new generation runs; moved sessions live on."""
    tls, client_ctx = _tls(tmp_path)
    relay: Relay = make_relay(children=2, tls=tls, core={"drain_timeout": 30})
    assert relay.start().returncode == 0, relay.log()
    assert relay.tls_port is not None
    alice = authed(relay.tls_port, "alice", client_ctx)
    bob = authed(relay.port, "bob")
    old = relay.worker_pids()
    relay.sections["core"]["retire_timeout"] = 2
    relay.write_config()
    assert relay.cli("reload").returncode == 0
    wait_for(lambda: len(relay.worker_pids() - old) == 2, 10, "the new generation")
    began = time.monotonic()
    try:
        got = alice.recv(timeout=10)
    except TimeoutError:
        pytest.fail("the TLS connection is still open")
    except (EOFError, OSError):
        pass  # closed by its old worker (TLS may end with an EOF or a reset)
    else:
        pytest.fail(f"unexpected frame {got.frame.buf!r}")
    took = time.monotonic() - began
    alice.close()
    print(f"the TLS connection was closed {took:.2f} s after the new generation ran")
    assert 1.5 < took < 2 + 1 + 3, took  # the supervisor looks once a second; a margin
    wait_for(lambda: not _old_workers(relay, old), 5, "the old generation to exit")
    log = relay.log()
    assert "retire_timeout passed, stopping it" in log and "SIGKILL" not in log
    with authed(relay.port, "alice") as carol:
        exchange(carol, bob, b"the moved session still works")
    bob.close()


class _NextHop:
    """A next hop: accepts any number of connections, records the body of every SEND on
    each (in order) and answers it 200, and notes which connections the relay closed."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.uri = f"msrp://127.0.0.1:{self.server.getsockname()[1]}/h1;tcp"
        self.lock = threading.Lock()
        self.bodies: list[list[bytes]] = []
        """Per connection, in the order it was accepted: the SEND bodies, in order."""
        self.closed: list[bool] = []
        self.socks: list[socket.socket] = []
        self.ok: list[bytes] = []
        """tids of its own SENDs the relay answered 200 (any connection)."""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return  # closed
            with self.lock:
                index = len(self.bodies)
                self.bodies.append([])
                self.closed.append(False)
                self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        reader = FrameReader()
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            reader.receive_data(data)
            for event in reader.events():
                if isinstance(event, Frame) and event.method == b"SEND":
                    with self.lock:
                        self.bodies[index].append(bytes(event.body or b""))
                    with contextlib.suppress(OSError):
                        sock.sendall(build_reply(event, 200, "OK"))
                elif isinstance(event, Frame) and event.code == 200:
                    with self.lock:
                        self.ok.append(event.tid)
            if not data:
                with self.lock:
                    self.closed[index] = True
                return

    def connections(self) -> int:
        with self.lock:
            return len(self.bodies)

    def close(self) -> None:
        self.server.close()
        for sock in self.socks:
            sock.close()


def _send_to_hop(
    client: MsrpClient, hop: _NextHop, tag: bytes, stop: threading.Event, sent: list[bytes]
) -> None:
    """`client` sends numbered SENDs through the relay to the next hop until `stop`, each
    once the relay has answered 200 to the one before."""
    path = f"{client.relay_uri} {hop.uri} msrp://127.0.0.1:9/far;tcp"
    while not stop.is_set():
        body = b"%s %05d" % (tag, len(sent))
        headers = [("Message-ID", body.decode()), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        tid = client.request("SEND", path, headers, body)
        got = client.recv(timeout=10)
        assert (got.frame.tid, got.frame.code) == (tid, 200), got.frame.buf
        sent.append(body)
        time.sleep(0.01)


def test_a_link_to_a_next_hop_is_left_to_the_new_generation(make_relay) -> None:  # type: ignore[no-untyped-def]
    """A connection the relay opened to a next hop does not keep its old worker alive: on
    a reload it leaves the registry, the new generation opens its own connection to the
    next hop, and the old one closes once quiet, so the old workers exit without
    retire_timeout (0) and long before drain_timeout. Two senders send all along: every
    frame reaches the next hop once, and each sender's frames go on one connection after
    another, never back (old frames on the old link, new ones on the new)."""
    relay: Relay = make_relay(children=2, core={"drain_timeout": 60})
    assert relay.start().returncode == 0, relay.log()
    hop = _NextHop()
    senders = [authed(relay.port, "alice"), authed(relay.port, "bob")]
    stop = threading.Event()
    sent: list[list[bytes]] = [[], []]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            _send_to_hop(senders[n], hop, b"s%d" % n, stop, sent[n])
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: all(len(s) > 20 for s in sent), 10, "traffic to the next hop")
        before = hop.connections()
        assert before >= 1
        old = relay.worker_pids()
        began = time.monotonic()
        assert relay.cli("reload").returncode == 0
        wait_for(lambda: len(relay.worker_pids() - old) == 2, 10, "the new generation")
        wait_for(lambda: not relay.worker_pids() & old, 20, "the old workers to exit")
        took = time.monotonic() - began
        print(f"old workers gone {took:.2f} s after the reload")
        counts = [len(s) for s in sent]
        wait_for(lambda: all(len(s) > c + 20 for s, c in zip(sent, counts, strict=True)), 10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert errors == []
    try:
        total = sum(map(len, sent))
        wait_for(lambda: sum(map(len, hop.bodies)) >= total, 10, "every frame at the next hop")
        time.sleep(0.5)  # a frame sent twice would show now
        with hop.lock:
            bodies = [list(b) for b in hop.bodies]
            closed = list(hop.closed)
        last_links = []
        for n, mine in enumerate(sent):
            tag = b"s%d " % n
            runs = [[b for b in conn if b.startswith(tag)] for conn in bodies]
            got = sorted(b for run in runs for b in run)
            assert got == mine, f"sender {n}: frames lost or doubled"
            order = [i for i, run in enumerate(runs) for _ in run]
            by_body = {b: i for i, run in enumerate(runs) for b in run}
            assert all(run == sorted(run) for run in runs), f"sender {n}: reordered on a link"
            used = [by_body[b] for b in mine]
            # Old frames on old links, new ones on new: once a sender's frame went on a link
            # opened after the reload, none goes on one from before. (Before that, a retiring
            # worker whose own link left the registry may hand a frame to another old
            # worker's link that is still listed: both are old links, retirelinks.py.)
            generations = [index >= before for index in used]
            assert generations == sorted(generations), (
                f"sender {n} went back to an old link: {used}"
            )
            assert used[-1] >= before, f"sender {n}: still on a link from before the reload"
            assert not closed[used[-1]], f"sender {n}: its link now was closed"
            last_links.append(used[-1])
            assert order  # it sent something
        assert all(closed[:before]), "a link from before the reload is still open"
        log = relay.log()
        assert "retire_timeout passed" not in log and "SIGKILL" not in log
        assert "closing the link to" in log
        # The next hop can still reach a client over the new generation's link.
        back = b"from the next hop"
        alice = senders[0]
        headers = [("Message-ID", "m2"), ("Byte-Range", f"1-{len(back)}/{len(back)}")]
        to_path = [alice.use_path or "", alice.uri]
        with hop.lock:  # a link of the new generation, open (the last one accepted may not be)
            link = hop.socks[last_links[0]]
        link.sendall(build_request(b"hop1", b"SEND", to_path, [hop.uri], headers, back))
        got = alice.recv(timeout=10)
        assert (got.frame.tid, got.body) == (b"hop1", back)
    finally:
        hop.close()
        for client in senders:
            client.close()


def test_a_busy_link_to_a_next_hop_closes_after_drain_timeout(make_relay) -> None:  # type: ignore[no-untyped-def]
    """A next hop that keeps sending on the old worker's link never lets it go quiet: the
    link closes between two frames once drain_timeout has passed since the reload, and the
    old worker exits. Every SEND the relay answered 200 on it reached Alice once, in order,
    and nothing else did."""
    relay: Relay = make_relay(children=2, core={"drain_timeout": 3})
    assert relay.start().returncode == 0, relay.log()
    hop = _NextHop()
    alice = authed(relay.port, "alice")
    stop = threading.Event()
    sent: list[bytes] = []
    try:
        body = b"opens the link"
        path = f"{alice.relay_uri} {hop.uri} msrp://127.0.0.1:9/far;tcp"
        headers = [("Message-ID", "m1"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        tid = alice.request("SEND", path, headers, body)
        ok = alice.recv()
        assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
        wait_for(lambda: hop.connections() == 1 and hop.bodies[0], 10, "the link")
        link = hop.socks[0]
        to_path = [alice.use_path or "", alice.uri]

        def keep_sending() -> None:
            while not stop.is_set() and not hop.closed[0]:
                tid = b"h%d" % len(sent)
                headers = [("Message-ID", tid.decode()), ("Byte-Range", "1-4/4")]
                try:
                    link.sendall(build_request(tid, b"SEND", to_path, [hop.uri], headers, tid))
                except OSError:
                    return
                sent.append(tid)
                time.sleep(0.2)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        time.sleep(0.5)
        old = relay.worker_pids()
        began = time.monotonic()
        assert relay.cli("reload").returncode == 0
        wait_for(lambda: len(relay.worker_pids() - old) == 2, 10, "the new generation")
        wait_for(lambda: not relay.worker_pids() & old, 15, "the old workers to exit")
        took = time.monotonic() - began
        stop.set()
        sender.join(10)
        print(f"old workers gone {took:.2f} s after the reload; {len(sent)} SENDs on the link")
        assert hop.closed[0]
        assert 3 <= took < 3 + 6, took  # drain_timeout, the supervisor's start, a margin
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(alice.recv(timeout=2).body)
        with hop.lock:
            answered = [tid for tid in hop.ok if tid.startswith(b"h")]
        assert len(answered) > 10
        assert got == answered, "lost, doubled or reordered"
        log = relay.log()
        assert "drain_timeout passed" in log
        assert "retire_timeout passed" not in log and "SIGKILL" not in log
    finally:
        stop.set()
        hop.close()
        alice.close()
