"""Fixtures for the control tests: short run dirs, real shm, a server loop, fake workers.

The control server runs as the supervisor runs it: a select loop over [wake pipe,
server.fileno()] plus the reply fds, calling on_readable()/on_writable(). Fake workers are
forked children that attach the shared memory, beat and publish counters like a worker, and
serve WorkerCtlServer with worker_handlers() over fake connections. Teardown kills only the
children forked here, by pid, and unlinks the test's shm segments.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from msrpd.config import CoreSettings, Settings
from msrpd.control.fifo import ControlServer
from msrpd.control.methods import WorkerInfo
from msrpd.control.rpc import Dispatch
from msrpd.rundir import ctl_path
from msrpd.shm import (
    Counter,
    ShmLayout,
    ShmSet,
    StatsCounters,
    WorkerState,
    instance_prefix,
    segment_names,
    unlink_stale,
)
from msrpd.workers.connstats import ConnStats
from msrpd.workers.ctl import WorkerCtlServer, worker_handlers
from msrpd.workers.handoff import make_conid
from msrpd.workers.transports.tcp import TcpWire

from ..forking import Children


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (Unix socket paths are capped at 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mctl-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(short_dir: Path) -> Settings:
    return Settings(core=CoreSettings(run_dir=short_dir, children=2))


# -- a control server driven like the supervisor drives it -----------------------------------


class ServerLoop:
    """ControlServer in a thread, in a select loop like the supervisor's."""

    def __init__(self, fifo: Path, dispatch: Dispatch) -> None:
        self.server = ControlServer(fifo, dispatch)
        self.wake_r, self.wake_w = os.pipe()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ServerLoop:
        self.server.open()
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            run_select_loop(self.server, self.wake_r)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        os.write(self.wake_w, b"x")
        self.thread.join(5.0)
        self.server.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.error is not None:
            raise self.error


def run_select_loop(server: ControlServer, wake_r: int) -> None:
    while True:
        ready, _, _ = select.select([wake_r, server.fileno()], server.write_fds(), [], 0.2)
        if wake_r in ready:
            return
        if server.fileno() in ready:
            server.on_readable()
        if server.wants_write():
            server.on_writable()


@pytest.fixture
def serve(short_dir: Path) -> Iterator[Callable[[Dispatch], ServerLoop]]:
    loops: list[ServerLoop] = []

    def start(dispatch: Dispatch) -> ServerLoop:
        loop = ServerLoop(short_dir / "msrpd.fifo", dispatch).start()
        loops.append(loop)
        return loop

    yield start
    for loop in loops:
        loop.stop()


def raw_call(
    fifo: Path, payload: bytes, reply_name: str | None, timeout: float = 3.0
) -> dict[str, Any] | None:
    """Write `payload` to the fifo and read the answer from `reply_name` (None: no answer
    came before `timeout`). Independent of msrpd.control.client on purpose."""
    reply = fifo.parent / reply_name if reply_name else None
    fd = -1
    if reply is not None:
        os.mkfifo(reply, 0o600)
        fd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
    try:
        out = os.open(fifo, os.O_WRONLY)
        os.write(out, payload)
        os.close(out)
        if reply is None:
            return None
        data = read_reply(fd, timeout)
        return json.loads(data) if data else None
    finally:
        if reply is not None:
            os.close(fd)
            os.unlink(reply)


def read_reply(fd: int, timeout: float) -> bytes:
    """Read a reply fifo until EOF; b"" when nothing came in time."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not poller.poll(50):
            continue
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            # A writer has the fifo open but wrote nothing yet: poll had reported the hang-up
            # of the previous writer (a second reply on the same fifo).
            continue
        if not chunk:
            return data
        data += chunk
    return data


def request(method: str, reply_name: str | None, params: Any = None, rid: Any = 1) -> bytes:
    doc: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        doc["params"] = params
    if reply_name is not None:
        doc["reply_name"] = reply_name
    return json.dumps(doc).encode() + b"\n"


# -- shared memory and fake workers -----------------------------------------------------------


@pytest.fixture
def layout(short_dir: Path) -> ShmLayout:
    return ShmLayout(
        prefix=instance_prefix(short_dir),
        lockfile=short_dir / "msrpd.lock",
        cmap_stripes=4,
        cmap_capacity=64,
        registry_capacity=64,
        process_slots=8,
    )


@pytest.fixture
def shm(layout: ShmLayout) -> Iterator[ShmSet]:
    shm = layout.create_all()
    try:
        yield shm
    finally:
        shm.close()
        shm.unlink()
        unlink_stale(f"{layout.prefix}-")
        assert segment_names(f"{layout.prefix}-") == []


@dataclass
class FakeConn:
    """What worker_handlers() reads of a connection (workers/connapi.py)."""

    ctx: FakeCtx
    conid: int
    peer_key: str
    stats: ConnStats
    wire: TcpWire = field(default_factory=lambda: TcpWire("tcp:127.0.0.1:2855"))
    closed: bool = False

    def close(self, reason: str = "closed by relay") -> None:
        self.closed = True
        self.stats.closing(reason)
        self.ctx.conns.pop(self.conid, None)


@dataclass
class FakeCtx:
    conns: dict[int, FakeConn] = field(default_factory=dict)

    def add(self, conid: int, peer: str, sessions: list[str]) -> FakeConn:
        stats = ConnStats(
            bytes_in=100, bytes_out=200, opened=time.monotonic() - 5.0, sessions=sessions
        )
        conn = FakeConn(self, conid, peer, stats)
        self.conns[conid] = conn
        return conn


@dataclass
class FakeWorker:
    info: WorkerInfo
    path: Path
    sessions: list[str]
    counters: dict[str, int]


def fake_worker_main(layout: ShmLayout, worker: FakeWorker, ready_w: int) -> None:
    """A forked child acting as worker `worker.info`: shm beats, counters, a ctl socket."""
    shm = layout.attach_all()
    ctx = FakeCtx()
    slot, gen = worker.info.slot, worker.info.generation
    for serial, sessid in enumerate(worker.sessions, start=1):
        ctx.add(make_conid(slot, gen, serial), f"tcp:192.0.2.{slot + 1}:{40000 + serial}", [sessid])
    counters = StatsCounters()
    for name, n in worker.counters.items():
        counters.add(Counter[name], n)

    async def main() -> None:
        server = WorkerCtlServer(worker.path, worker_handlers(ctx))  # type: ignore[arg-type]
        await server.start()
        os.write(ready_w, b"!")
        while True:
            counters.values[Counter.conns_open] = len(ctx.conns)
            shm.stats.publish(worker.info.index, counters)
            shm.heartbeats.beat(worker.info.index, WorkerState.RUNNING, len(ctx.conns))
            await asyncio.sleep(0.02)

    asyncio.run(main())


def start_workers(
    children: Children, layout: ShmLayout, shm: ShmSet, workers: list[FakeWorker]
) -> list[FakeWorker]:
    """Fork the fake workers the way the supervisor does (claim, fork, claim with the pid)."""
    started = []
    for worker in workers:
        info = worker.info
        ready_r, ready_w = os.pipe()
        shm.heartbeats.claim(info.index, 0, info.slot, info.generation)
        pid = children.fork(functools.partial(fake_worker_main, layout, worker, ready_w))
        os.close(ready_w)
        shm.heartbeats.claim(info.index, pid, info.slot, info.generation)
        poller = select.poll()
        poller.register(ready_r, select.POLLIN)
        assert poller.poll(10_000), "fake worker did not start"
        os.close(ready_r)
        info = WorkerInfo(pid, info.slot, info.generation, info.index, info.state)
        started.append(FakeWorker(info, worker.path, worker.sessions, worker.counters))
    return started


@dataclass
class FakeView:
    """A SupervisorView over real shared memory and real worker processes."""

    settings: Settings
    shm: ShmSet
    started: float
    supervisor_pid: int
    fakes: list[FakeWorker]
    reloads: int = 0
    shutdowns: int = 0

    def workers(self) -> list[WorkerInfo]:
        return [fake.info for fake in self.fakes]

    def request_reload(self) -> None:
        self.reloads += 1

    def request_shutdown(self) -> None:
        self.shutdowns += 1

    def worker_ctl_paths(self) -> list[tuple[WorkerInfo, Path]]:
        return [(fake.info, fake.path) for fake in self.fakes]


def worker_specs(run_dir: Path) -> list[FakeWorker]:
    return [
        FakeWorker(
            WorkerInfo(0, 0, 1, 0, "running"),
            ctl_path(run_dir, 0, 1),
            ["sess-a0", "sess-a1"],
            {"frames_in_send": 5, "frames_out": 7, "replies_2xx": 3, "bytes_in": 1000},
        ),
        FakeWorker(
            WorkerInfo(0, 1, 1, 1, "running"),
            ctl_path(run_dir, 1, 1),
            ["sess-b0"],
            {"frames_in_send": 2, "frames_out": 1, "replies_4xx": 1, "bytes_in": 24},
        ),
    ]
