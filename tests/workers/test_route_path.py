"""The route path on real connections: RouteRunner and ConnEnv (routeenv.py), Delivery and
the sinks, each MsrpConnection served by the event loop over TCP on 127.0.0.1. The frame's
source is passed down (no shared current_* state): a relayed frame reaches the destination
socket, a failed relay after the route's 200 reaches the sender as a failure REPORT, a frame
for another worker becomes a HandoffSink whose token remembers it (gone.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from msrpd.config import load_config
from msrpd.protocol import Frame, FrameReader, ReaderLimits
from msrpd.routing import Destination, Msrp, RoutePolicy, RouteScript
from msrpd.shm import Counter
from msrpd.workers.conn import MsrpConnection
from msrpd.workers.context import WorkerContext, WorkerIdentity
from msrpd.workers.delivery import Delivery
from msrpd.workers.handoff import make_conid
from msrpd.workers.links import HandoffHub
from msrpd.workers.routeenv import RouteRunner
from msrpd.workers.sinks import HandoffSink, LocalSink

SEND = (
    b"MSRP t1 SEND\r\nTo-Path: msrp://relay:2855/sB;tcp msrp://bob:1/b;tcp\r\n"
    b"From-Path: msrp://alice:9/a;tcp\r\nMessage-ID: m1\r\nByte-Range: 1-5/5\r\n"
    b"Content-Type: text/plain\r\n\r\nhello\r\n-------t1$\r\n"
)
POLICY = RoutePolicy(1800, 3600, None, "realm", False)


class Heartbeats:
    def set_conns(self, index: int, conns: int) -> None:
        pass

    def reserve_serials(self, index: int, mark: int) -> None:
        pass


class Shm:
    heartbeats = Heartbeats()
    cmap = registry = None


def frames(data: bytes) -> list[Frame]:
    reader = FrameReader()
    reader.receive_data(data)
    return [e for e in reader.events() if isinstance(e, Frame)]


async def read_until(sock: socket.socket, count: int) -> list[Frame]:
    loop, data = asyncio.get_running_loop(), b""
    while len(frames(data)) < count:
        data += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    return frames(data)


class Worker:
    """One worker's context, route runner and delivery, with connections over TCP on 127.0.0.1."""

    def __init__(self, script: Callable[[Msrp], None], hub: HandoffHub | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        settings = load_config(None)
        shm = cast(Any, Shm())
        self.ctx = ctx = WorkerContext(settings, WorkerIdentity(0, 1, 0), shm, self.loop, hub)
        route = RouteScript(Path("test"), script, None)
        self.delivery = Delivery(ctx, None, lambda secure: MsrpConnection(ctx, routes, "", secure))
        limits = ReaderLimits()
        routes = RouteRunner(route, POLICY, b"s", shm, ctx.counters, limits, delivery=self.delivery)
        self.routes = routes

    async def connect(self) -> tuple[MsrpConnection, socket.socket]:
        # A TCP pair on 127.0.0.1: the connection names its peer by address.
        with socket.create_server(("127.0.0.1", 0)) as server:
            peer = socket.create_connection(server.getsockname())
            ours, _ = server.accept()
        peer.setblocking(False)
        conn = MsrpConnection(self.ctx, self.routes, "tcp:127.0.0.1:2855", False)
        await self.loop.connect_accepted_socket(lambda: conn, ours)
        return conn, peer


async def _test_a_relayed_frame_reaches_the_destination_socket_after_the_200() -> None:
    dest: list[int] = []

    def script(msrp: Msrp) -> None:
        msrp.reply(200, "OK")
        msrp.env.relay(msrp.frame, bytes(msrp.frame.buf), Destination(None, dest[0]), 0)

    worker = Worker(script)
    _alice, alice_peer = await worker.connect()
    bob, bob_peer = await worker.connect()
    dest.append(bob.conid)
    await worker.loop.sock_sendall(alice_peer, SEND)
    (relayed,) = await read_until(bob_peer, 1)
    assert (relayed.tid, relayed.method) == (b"t1", b"SEND")
    (answer,) = await read_until(alice_peer, 1)
    assert answer.code == 200 and answer.tid == b"t1"
    assert worker.ctx.counters.values[Counter.frames_out] == 1
    assert bob.sent_log.relayed  # written as relayed: a stop would report it to alice
    for s in (alice_peer, bob_peer):
        s.close()


async def _test_a_relay_that_fails_after_the_200_reaches_the_sender_as_a_report() -> None:
    results: list[int] = []

    def script(msrp: Msrp) -> None:
        msrp.reply(200, "OK")
        gone = make_conid(0, 1, 999_999)  # ours, and not a connection: nowhere to go
        results.append(msrp.env.relay(msrp.frame, b"x", Destination(None, gone), 0))

    worker = Worker(script)
    _alice, alice_peer = await worker.connect()
    await worker.loop.sock_sendall(alice_peer, SEND)
    ok, report = await read_until(alice_peer, 2)
    assert results == [-1]
    assert ok.code == 200
    assert report.method == b"REPORT" and report.header("Message-ID") == b"m1"
    assert report.header("Status") == b"000 481 Not Delivered"
    assert report.to_path == ["msrp://alice:9/a;tcp"]
    assert worker.ctx.counters.values[Counter.relay_fail] == 1
    alice_peer.close()


async def _test_delivery_gives_a_local_sink_here_and_a_handoff_sink_for_another_worker(
    tmp_path: Path,
) -> None:
    hub = HandoffHub(
        tmp_path / "own.sock",
        lambda *args: True,
        lambda conid, token: None,
        asyncio.get_running_loop(),
        close_conn=lambda conid: None,
    )
    sinks: list[object] = []

    def script(msrp: Msrp) -> None:
        for conid in (bob_id[0], make_conid(1, 1, 5)):  # ours, then worker 1's
            sinks.append(worker.delivery.resolve(Destination(None, conid), 0, msrp.frame, alice))

    bob_id: list[int] = []
    worker = Worker(script, hub)
    alice, alice_peer = await worker.connect()
    bob, bob_peer = await worker.connect()
    bob_id.append(bob.conid)
    await worker.loop.sock_sendall(alice_peer, SEND)
    while len(sinks) < 2:
        await asyncio.sleep(0.01)
    local, remote = sinks
    assert isinstance(local, LocalSink) and local.conn is bob and local.reader is alice
    assert isinstance(remote, HandoffSink) and remote.reader is alice
    assert remote.path == worker.ctx.handoffs.path(1, 1)
    # Its token remembers the frame, so that a GONE for it is reported to alice (gone.py).
    assert remote.send(b"piece", more=True)
    token = remote.stream_token  # every piece of the frame carries it
    assert token is not None and remote.send(b"end") and remote.stream_token is None
    record = worker.ctx.handoffs.sent.take(token)
    assert record is not None and (record.tid, record.origin) == (b"t1", alice.conid)
    assert record.peer == alice.peer_key and record.head is not None
    assert worker.ctx.counters.values[Counter.handoffs_out] == 2
    await hub.close()
    for s in (alice_peer, bob_peer):
        s.close()


def test_a_relayed_frame_reaches_the_destination_socket_after_the_200() -> None:
    asyncio.run(_test_a_relayed_frame_reaches_the_destination_socket_after_the_200())


def test_a_relay_that_fails_after_the_200_reaches_the_sender_as_a_report() -> None:
    asyncio.run(_test_a_relay_that_fails_after_the_200_reaches_the_sender_as_a_report())


def test_delivery_gives_a_local_sink_here_and_a_handoff_sink_for_another_worker(
    tmp_path: Path,
) -> None:
    asyncio.run(
        _test_delivery_gives_a_local_sink_here_and_a_handoff_sink_for_another_worker(tmp_path)
    )
