"""For the migration tests: real TCP connections (accepted asyncio transports, what a worker
moves or passes, and the client sockets at their other ends), a connection as the migration
code sees it around such a transport, a recording stand-in for the worker around it, and a
worker's migration objects built as worker.py builds them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msrpd.shm import Heartbeats, StatsCounters
from msrpd.workers.connstats import ConnStats
from msrpd.workers.handoff import HandoffKind, make_conid
from msrpd.workers.migrate.build import build_migration
from msrpd.workers.migrate.lock import MoveLock
from msrpd.workers.migrate.state import Arrival, MigrationState, Worker
from msrpd.workers.transports.tcp import TcpWire

LISTEN = "tcp:127.0.0.1:2855"


class Accepted(asyncio.Protocol):
    def __init__(self, transports: list[asyncio.Transport]) -> None:
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transports.append(transport)


class Net:
    """Accepted TCP connections (the relay's transports) and their clients."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transports: list[asyncio.Transport] = []
        self.clients: list[socket.socket] = []
        self.server = loop.run_until_complete(
            loop.create_server(lambda: Accepted(self.transports), "127.0.0.1", 0)
        )

    def connect(self) -> tuple[asyncio.Transport, socket.socket]:
        port = self.server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.settimeout(5)
        self.clients.append(client)
        count = len(self.transports)
        while len(self.transports) == count:
            self.loop.run_until_complete(asyncio.sleep(0.01))
        return self.transports[-1], client

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()
        for client in self.clients:
            client.close()
        self.server.close()
        self.loop.run_until_complete(asyncio.sleep(0))


@dataclass(eq=False)
class Conn:
    """A connection as the migration code sees it (ports.Conn), around a real transport."""

    conid: int
    transport: asyncio.Transport | None
    carry: bytes | None = b""
    """What bytes_to_carry says: the reader's bytes, or None when it cannot move now."""
    local_sock: str = LISTEN
    migration: MigrationState = field(default_factory=lambda: MigrationState(movable=True))
    arrival: Arrival | None = None
    closed: bool = False
    stats: ConnStats = field(
        default_factory=lambda: ConnStats(5, 6, 700, 800, 1.0, 2.0, ["sess-a"])
    )
    calls: list[str] = field(default_factory=list)
    release_link: object = None
    """Where RELEASE comes (release_on)."""
    wire: TcpWire = field(init=False)
    """Over `transport`, accepted on `local_sock`."""

    def __post_init__(self) -> None:
        self.wire = TcpWire(self.local_sock)
        self.wire.transport = self.transport

    def bytes_to_carry(self) -> bytes | None:
        return self.carry

    def rate_levels(self) -> tuple[float | None, ...]:
        return ()

    def block(self, dest: Hashable) -> None:
        self.calls.append("block")

    def unblock(self, dest: Hashable) -> None:
        self.calls.append("unblock")

    def carry_size(self) -> int:
        return -1 if self.carry is None else len(self.carry)

    def arrive(self, carried: bytes, on_taken_over: Callable[[Any], None]) -> None:
        self.arrival = Arrival(carried, on_taken_over)

    def release_on(self, link: object) -> None:
        self.release_link = link

    def hold_reading(self) -> None:
        self.calls.append("hold_reading")

    def start_reading(self) -> None:
        self.calls.append("start_reading")

    def release(self) -> None:
        self.calls.append("release")


@dataclass
class Host:
    """The worker's side, recording what the migration code asks of it (ports.WorkerPort:
    the context with its handoffs, batch and stop state all in one)."""

    loop: asyncio.AbstractEventLoop
    conns: dict[int, Conn] = field(default_factory=dict)
    stopping: bool = False
    counters: StatsCounters = field(default_factory=StatsCounters)
    controls: list[tuple[Worker, HandoffKind, int, int, bytes]] = field(default_factory=list)
    frames: list[tuple[Path, int, int, bytes, int]] = field(default_factory=list)
    records: list[object] = field(default_factory=list)
    """The routed frame of each token made."""
    served: list[tuple[Conn, socket.socket]] = field(default_factory=list)
    cmap: None = None
    registry: None = None

    @property
    def hub(self) -> Host:
        return self

    @property
    def handoffs(self) -> Host:
        return self

    @property
    def sent(self) -> Host:
        return self

    @property
    def batch(self) -> Host:
        return self

    @property
    def stop(self) -> Host:
        return self

    def send(self, path: Path, conid: int, token: int, parts: list[Any], flags: int = 0) -> None:
        self.frames.append((path, conid, token, b"".join(parts), flags))

    def flush_now(self) -> None:
        pass

    def path(self, slot: int, generation: int) -> Path:
        return Path(f"/handoff-{slot}-{generation}")

    def control(
        self, worker: Worker, kind: HandoffKind, conid: int, token: int = 0, payload: bytes = b""
    ) -> None:
        self.controls.append((worker, kind, conid, token, payload))

    def new_token(self, record: object = None) -> int:
        self.records.append(record)
        return len(self.records)

    def note_forward(self, token: int, source: object) -> None:
        pass

    def note_moved(self, old: int, path: Path, new: int) -> None:
        pass

    def throttle(self, path: Path, reader: object) -> None:
        pass

    def serve_socket(self, conn: Conn, sock: socket.socket) -> None:
        self.served.append((conn, sock))


class Side:
    """One worker's migration objects, built as worker.py builds them."""

    def __init__(
        self, run_dir: Path, me: Worker, index: int, hb: Heartbeats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.me = me
        self.serial = 50
        self.host = Host(loop)
        self.built = built = build_migration(
            self.host,
            {},
            hb,
            run_dir=run_dir,
            me=me,
            index=index,
            colocate=True,
            linger=1.0,
            delivery=None,
            new_conn=self._new_conn,
            adopt=self._adopt,
        )
        self.balancer, self.mover = built.balancer, built.mover
        self.inbox, self.handover, self.lock = (
            built.balancer.inbox,
            built.mover.handover,
            built.mover.lock,
        )
        self.balancer.start()

    def _new_conn(self, listen: str) -> Conn:
        self.serial += 1
        return Conn(make_conid(*self.me, self.serial), None, local_sock=listen)

    def _adopt(self, sock: socket.socket, listen: str) -> None:
        raise AssertionError("nothing is passed in these tests")

    def close(self) -> None:
        for _, sock in self.host.served:
            sock.close()
        self.balancer.close()
        self.mover.close()


def conn_on(worker: Side, net: Net, serial: int = 1) -> tuple[Conn, socket.socket]:
    transport, client = net.connect()
    conn = Conn(make_conid(*worker.me, serial), transport)
    worker.host.conns[conn.conid] = conn
    return conn, client


@contextlib.contextmanager
def held_elsewhere(run_dir: Path) -> Iterator[None]:
    """Another process (another worker) holds the move lock meanwhile (lockf locks are per
    process: this one could always take its own)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = MoveLock(run_dir).acquire()
        os.write(ready_w, b"y" if ok else b"n")
        os.read(go_r, 1)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"y"
        yield
    finally:
        os.write(go_w, b"g")
        os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)


def free_elsewhere(run_dir: Path) -> bool:
    """Whether another process could take the move lock now."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0 if MoveLock(run_dir).acquire() else 1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
