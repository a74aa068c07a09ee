"""Helpers for route-path tests: one worker's real context, route runner and delivery, and
real MsrpConnections served by the event loop over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from msrpd.config import LimitsSettings, load_config
from msrpd.config.selfuri import SelfUris
from msrpd.protocol import Frame, FrameReader, ReaderLimits
from msrpd.routing import Msrp, RoutePolicy, RouteScript
from msrpd.workers.conn import MsrpConnection
from msrpd.workers.context import WorkerContext, WorkerIdentity
from msrpd.workers.delivery import Delivery
from msrpd.workers.limits import ConnGuard
from msrpd.workers.links import HandoffHub
from msrpd.workers.loopback import Loopback
from msrpd.workers.routeenv import RouteRunner
from msrpd.workers.transports.tcp import TcpWire
from msrpd.workers.transports.tls import TlsWire

POLICY = RoutePolicy(1800, 3600, None, "realm", False)
NO_LIMITS = LimitsSettings(
    max_conns_per_addr=0,
    max_unauth_conns=0,
    auth_failures_close=0,
    ban_after=0,
    max_sessions_per_user=0,
    max_outbound_per_second=0,
    session_frame_rate=0,
    session_byte_rate=0,
)


def no_limits(ctx: WorkerContext) -> ConnGuard:
    """A [limits] guard with every limit off: it touches no shared table."""
    none = cast(Any, None)
    return ConnGuard(NO_LIMITS, 1, 0, none, none, none, ctx.counters, ctx.loop)


FROM_ALICE = "msrp://alice:9/a;tcp"


def send(tid: str, body: bytes = b"hello", headers: str = "", to: str = "") -> bytes:
    to = to or "msrp://relay:2855/sB;tcp msrp://bob:1/b;tcp"
    return (
        (
            f"MSRP {tid} SEND\r\nTo-Path: {to}\r\nFrom-Path: {FROM_ALICE}\r\n"
            f"Message-ID: m-{tid}\r\nByte-Range: 1-{len(body)}/{len(body)}\r\n{headers}"
            f"Content-Type: text/plain\r\n\r\n"
        ).encode()
        + body
        + f"\r\n-------{tid}$\r\n".encode()
    )


def frames(data: bytes) -> list[Frame]:
    reader = FrameReader(ReaderLimits(max_body=1 << 24))
    reader.receive_data(data)
    return [e for e in reader.events() if isinstance(e, Frame)]


async def read_frames(sock: socket.socket, count: int) -> list[Frame]:
    """The next `count` frames the peer socket gets (and no more than were sent)."""
    loop, data = asyncio.get_running_loop(), b""
    while len(frames(data)) < count:
        data += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5)
    return frames(data)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.002)


class Heartbeats:
    def set_conns(self, index: int, conns: int) -> None:
        pass

    def reserve_serials(self, index: int, mark: int) -> None:
        pass


class Shm:
    """No shared tables: relays name connections by id or address (no cmap, no registry)."""

    heartbeats = Heartbeats()
    cmap = registry = None


class Worker:
    """Worker (slot 0, generation 1): its context, route runner and delivery."""

    def __init__(
        self,
        script: Callable[[Msrp], None],
        hub: HandoffHub | Callable[[WorkerContext], HandoffHub] | None = None,
        limits: ReaderLimits | None = None,
        self_uris: SelfUris | None = None,
    ) -> None:
        """`hub`: a hub the test built, or how to build it from the context (inbound.py);
        `self_uris`: this relay's own URIs, routed again here (loopback.py)."""
        self.loop = asyncio.get_running_loop()
        shm = cast(Any, Shm())
        self.ctx = ctx = WorkerContext(
            load_config(None), WorkerIdentity(0, 1, 0), shm, self.loop, _given(hub)
        )
        route = RouteScript(Path("test-route"), script, None)
        self.delivery = Delivery(
            ctx,
            None,
            lambda secure: MsrpConnection(ctx, self.routes, TlsWire() if secure else TcpWire()),
        )
        self.limits = limits = limits or ReaderLimits()
        loopback = None
        if self_uris is not None:
            loopback = Loopback(route, limits, ctx.counters, self_uris)
        self.routes = RouteRunner(
            route,
            POLICY,
            b"secret",
            shm,
            ctx.counters,
            self.limits,
            no_limits(ctx),
            delivery=self.delivery,
            loopback=loopback,
        )

    async def connect(self) -> tuple[MsrpConnection, socket.socket]:
        """A client connection: ours (served by the loop) and the client's socket."""
        with socket.create_server(("127.0.0.1", 0)) as server:
            peer = socket.create_connection(server.getsockname())
            ours, _ = server.accept()
        peer.setblocking(False)
        conn = MsrpConnection(self.ctx, self.routes, TcpWire("tcp:127.0.0.1:2855"))
        await self.loop.connect_accepted_socket(lambda: conn, ours)
        return conn, peer


def _given(
    hub: HandoffHub | Callable[[WorkerContext], HandoffHub] | None,
) -> Callable[[WorkerContext], HandoffHub] | None:
    """The context's hub factory, also for a hub the test built (its handler is the test's)."""
    if isinstance(hub, HandoffHub):
        return lambda ctx: hub
    return hub
