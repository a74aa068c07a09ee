"""Worker control sockets: WorkerCtlServer (asyncio) and query_worker(s) (blocking, bounded)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from msrpd.control.workerctl import WorkerCtlError, query_worker, query_workers
from msrpd.rundir import ctl_path
from msrpd.workers.ctl import MAX_LINE, Handler, WorkerCtlServer, set_log_level, worker_handlers

from .conftest import FakeCtx


class ServerThread:
    """A WorkerCtlServer on its own event loop in a thread."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.server = WorkerCtlServer(path, handlers, idle_timeout=0.5)
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self.started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def start_server() -> Iterator[Callable[[Path, Mapping[str, Handler]], ServerThread]]:
    servers: list[ServerThread] = []

    def start(path: Path, handlers: Mapping[str, Handler]) -> ServerThread:
        server = ServerThread(path, handlers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def handlers() -> dict[str, Handler]:
    async def later(params: dict[str, Any]) -> str:
        await asyncio.sleep(0.01)
        return "awaited"

    def bad(params: dict[str, Any]) -> None:
        raise ValueError("bad value")

    def broken(params: dict[str, Any]) -> None:
        raise RuntimeError("broken inside")

    def stuck(params: dict[str, Any]) -> str:
        time.sleep(float(params.get("seconds", 1.0)))  # blocks the worker's loop on purpose
        return "late"

    return {
        "echo": lambda params: params,
        "later": later,
        "bad": bad,
        "broken": broken,
        "stuck": stuck,
        "set": lambda params: {1, 2},
    }


def test_ctl_path(short_dir: Path) -> None:
    assert ctl_path(short_dir, 3, 7) == short_dir / "ctl-3-7.sock"


def test_round_trip_and_socket_mode(start_server: Any, short_dir: Path) -> None:
    path = ctl_path(short_dir, 0, 1)
    start_server(path, handlers())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert query_worker(path, "echo", {"a": [1, 2]}) == {"a": [1, 2]}
    assert query_worker(path, "echo") == {}
    assert query_worker(path, "later") == "awaited"


def test_error_answers_raise(
    start_server: Any, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = ctl_path(short_dir, 0, 1)
    start_server(path, handlers())
    with pytest.raises(WorkerCtlError, match="unknown method 'nosuch'"):
        query_worker(path, "nosuch")
    with pytest.raises(WorkerCtlError, match="params must be an object"):
        query_worker(path, "echo", [1])
    with pytest.raises(WorkerCtlError, match="bad value"):
        query_worker(path, "bad")
    with caplog.at_level(logging.ERROR):
        with pytest.raises(WorkerCtlError, match="internal error: broken inside"):
            query_worker(path, "broken")
        with pytest.raises(WorkerCtlError, match="internal error"):
            query_worker(path, "set")
    assert "broken inside" in caplog.text


def test_timeout_refusal_and_missing_socket(start_server: Any, short_dir: Path) -> None:
    path = ctl_path(short_dir, 0, 1)
    start_server(path, handlers())
    t0 = time.monotonic()
    with pytest.raises(WorkerCtlError, match=r"no answer in 0\.3 s"):
        query_worker(path, "stuck", {"seconds": 1.0}, timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 0.8
    with pytest.raises(WorkerCtlError, match="No such file"):
        query_worker(short_dir / "nobody.sock", "echo")
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(short_dir / "deaf.sock"))  # bound, never listening: refused
    try:
        with pytest.raises(WorkerCtlError, match="refused"):
            query_worker(short_dir / "deaf.sock", "echo")
    finally:
        bound.close()
    time.sleep(0.8)  # let "stuck" finish, then the server answers again
    assert query_worker(path, "echo", {"x": 1}) == {"x": 1}


def test_query_workers_asks_everyone_at_once_with_one_deadline(
    start_server: Any, short_dir: Path
) -> None:
    paths = [ctl_path(short_dir, slot, 1) for slot in range(4)]
    for path in paths:
        start_server(path, handlers())
    calls = [
        (paths[0], "echo", {"n": 0}),
        (paths[1], "stuck", {"seconds": 1.0}),
        (paths[2], "stuck", {"seconds": 1.0}),
        (short_dir / "gone.sock", "echo", {}),
        (paths[3], "bad", {}),
    ]
    t0 = time.monotonic()
    out = query_workers(calls, timeout=0.4)
    assert time.monotonic() - t0 < 0.9  # not 0.4 s per stuck worker
    assert out[0] == {"n": 0}
    assert all(isinstance(o, WorkerCtlError) for o in out[1:])
    assert "no answer" in str(out[1]) and "no answer" in str(out[2])
    assert "bad value" in str(out[4])


def test_many_requests_on_one_connection_and_line_limits(
    start_server: Any, short_dir: Path
) -> None:
    path = ctl_path(short_dir, 0, 1)
    start_server(path, handlers())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(path))
        sock.sendall(b'{"method":"echo","params":{"i":1}}\n{"method":"echo","params":{"i":2}}\n')
        sock.sendall(b"not json\n[1]\n")
        data = b""
        while data.count(b"\n") < 4:
            data += sock.recv(4096)
        lines = data.splitlines()
        assert lines[:2] == [b'{"result":{"i":1}}', b'{"result":{"i":2}}']
        assert b"not JSON" in lines[2] and b"JSON object" in lines[3]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(path))
        sock.sendall(b"x" * (MAX_LINE + 10))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert b"request over" in data  # answered, then closed
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(str(path))
        t0 = time.monotonic()
        assert sock.recv(10) == b""  # idle: closed after idle_timeout
        assert time.monotonic() - t0 < 2.0


def test_close_removes_the_socket_and_start_replaces_a_stale_one(short_dir: Path) -> None:
    path = ctl_path(short_dir, 0, 1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()

    async def main() -> None:
        server = WorkerCtlServer(path, {"echo": lambda p: p})
        await server.start()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        await server.close()

    asyncio.run(main())
    assert not path.exists()


def test_worker_handlers_list_and_close_connections() -> None:
    ctx = FakeCtx()
    ctx.add(0x1_0001_0000000001, "tcp:192.0.2.1:4000", ["s1"])
    ctx.add(0x1_0001_0000000002, "tcp:192.0.2.2:4000", [])
    table = worker_handlers(ctx)  # type: ignore[arg-type]
    rows = table["conns"]({})
    assert [r["peer"] for r in rows] == ["tcp:192.0.2.1:4000", "tcp:192.0.2.2:4000"]
    assert rows[0]["sessions"] == ["s1"] and rows[0]["bytes_in"] == 100
    assert rows[0]["conid"] == 0x1_0001_0000000001 and rows[0]["age"] >= 5.0
    assert table["close"]({"conid": 0x1_0001_0000000001}) is True
    assert table["close"]({"conid": 0x1_0001_0000000001}) is False
    with pytest.raises(ValueError, match="integer conid"):
        table["close"]({"conid": "1"})
    assert len(table["conns"]({})) == 1


def test_set_log_level() -> None:
    root = logging.getLogger()
    before = root.level
    try:
        assert set_log_level({"level": "debug"}) == "debug"
        assert root.level == logging.DEBUG
        assert set_log_level({}) == "debug"
        with pytest.raises(ValueError, match="one of"):
            set_log_level({"level": "loud"})
    finally:
        root.setLevel(before)
