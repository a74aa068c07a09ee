"""A connection just moved to this worker (migrate/handover.py), driven through its asyncio.Protocol
methods with a recording transport: it reads nothing until start_reading, the old worker's
bytes first; an EOF that comes meanwhile waits behind them; frames for it wait for release()
unless the old worker forwarded them, and the link RELEASE comes on is never paused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from msrpd.config import load_config
from msrpd.protocol import ReaderLimits
from msrpd.workers.conn import MsrpConnection
from msrpd.workers.context import WorkerContext, WorkerIdentity
from msrpd.workers.ports import WRITE_HIGH
from msrpd.workers.routeenv import RouteRunner
from msrpd.workers.transports.tcp import TcpWire

from .routepath import POLICY, no_limits


def send(tid: str) -> bytes:
    return (
        f"MSRP {tid} SEND\r\nTo-Path: msrp://relay:2855/s1;tcp\r\n"
        f"From-Path: msrp://alice:9/a;tcp\r\nMessage-ID: {tid}\r\nByte-Range: 1-2/2\r\n"
        f"Content-Type: text/plain\r\n\r\nhi\r\n-------{tid}$\r\n"
    ).encode()


@dataclass
class Transport:
    written: list[bytes] = field(default_factory=list)
    reading: bool = True
    closed: bool = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def writelines(self, pieces: list[bytes]) -> None:
        self.written.append(b"".join(pieces))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class Route:
    tids: list[bytes] = field(default_factory=list)
    sip = None

    def event(self, msrp: Any) -> None:
        self.tids.append(msrp.frame.tid)


class Heartbeats:
    def set_conns(self, index: int, conns: int) -> None:
        pass

    def reserve_serials(self, index: int, mark: int) -> None:
        pass


@dataclass
class Shm:
    heartbeats: Heartbeats = field(default_factory=Heartbeats)
    cmap: None = None
    registry: None = None


class Loop:
    """Callbacks are not run: the test flushes by hand."""

    def __init__(self) -> None:
        self.soon: list[object] = []

    def call_soon(self, callback: object) -> None:
        self.soon.append(callback)


class Link:
    """A stand-in for the handoff link RELEASE comes on (flow.Blockable)."""

    def __init__(self) -> None:
        self.blocked: list[object] = []

    def block(self, dest: object) -> None:
        self.blocked.append(dest)

    def unblock(self, dest: object) -> None:
        self.blocked.remove(dest)


def moved_conn(carried: bytes) -> tuple[MsrpConnection, Transport, Route, WorkerContext]:
    route = Route()
    shm = cast(Any, Shm())
    ctx = WorkerContext(load_config(None), WorkerIdentity(0, 1, 0), shm, cast(Any, Loop()))
    routes = RouteRunner(
        cast(Any, route), POLICY, b"", shm, ctx.counters, ReaderLimits(), no_limits(ctx)
    )
    conn = MsrpConnection(ctx, routes, TcpWire("tcp:127.0.0.1:2855"))
    conn.migration.moves = 1
    conn.arrive(carried, lambda c: c.hold_reading())  # MOVING has not come yet
    transport = Transport()
    conn.connection_made(cast(Any, transport))
    return conn, transport, route, ctx


def test_reads_wait_for_moving_and_eof_waits_behind_the_carried_bytes() -> None:
    first, second = send("a1"), send("a2")
    conn, transport, route, _ctx = moved_conn(first[:30])
    conn.data_received(first[30:] + second[:10])  # uvloop reads anyway: kept, reading paused
    assert route.tids == [] and not transport.reading
    assert conn.eof_received() is True  # the peer closed: the transport must stay for now
    conn.data_received(second[10:])  # cannot happen after EOF on TCP; kept behind it anyway
    assert route.tids == []
    conn.start_reading()
    assert route.tids == [b"a1", b"a2"]  # in order, whole, before the close
    assert transport.closed and conn.stats.close_reason == "closed by peer"


def test_frames_wait_for_release_unless_forwarded_and_the_release_link_keeps_reading() -> None:
    conn, transport, _route, _ctx = moved_conn(b"")
    link = Link()
    assert conn.arrival is not None and conn.holding
    conn.release_on(link)
    conn.start_reading()
    local = Link()
    # Routed here after the cmap changed: held.
    assert conn.out.write_frame(b"direct-1", reader=local)
    # Routed before: goes out.
    assert conn.out.write_frame(b"forwarded-1", forwarded=True, reader=link)
    big = b"x" * (WRITE_HIGH + 1)
    assert conn.out.write_frame(
        big, reader=link
    )  # over the high-water mark, from the RELEASE link...
    assert link.blocked == []  # ...which is never paused for it
    assert conn.out.write_frame(b"direct-2", reader=local)
    assert local.blocked == [conn.out]  # a local source is paused while so much is held
    conn.out.flush()
    assert transport.written == [b"forwarded-1"]
    conn.release()
    conn.out.flush()
    assert transport.written == [b"forwarded-1", b"direct-1" + big + b"direct-2"]
    assert local.blocked == [] and not conn.holding and conn.arrival is None
