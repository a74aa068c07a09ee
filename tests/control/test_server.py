"""ControlServer over real fifos: the jsonrpcs request/reply format, errors, concurrency.

Requests are written the way a shell user or kamcmd-like client writes them (raw_call in
conftest), not through msrpd.control.client, so these tests pin the wire format itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from msrpd.control.client import call
from msrpd.control.fifo import REPLY_TIMEOUT, ControlServer
from msrpd.control.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    dispatcher,
)

from ..forking import Children
from .conftest import ServerLoop, raw_call, read_reply, request, run_select_loop


def echo_methods(calls: list[tuple[str, Any]] | None = None) -> dict[str, Callable[[Any], Any]]:
    def echo(params: Any) -> Any:
        if calls is not None:
            calls.append(("echo", params))
        return params

    def strict(params: Any) -> Any:
        if params != ["ok"]:
            raise RpcError(INVALID_PARAMS, 'strict wants ["ok"]')
        return "fine"

    def boom(params: Any) -> Any:
        raise RuntimeError("kaput")

    return {
        "echo": echo,
        "strict": strict,
        "boom": boom,
        "big": lambda params: "x" * (1 << 20),
        "unjsonable": lambda params: {1, 2},
    }


@pytest.fixture
def loop(serve: Callable[..., ServerLoop]) -> ServerLoop:
    return serve(dispatcher(echo_methods()))


def test_fifo_is_created_mode_0600_and_removed_on_close(short_dir: Path) -> None:
    server = ControlServer(short_dir / "msrpd.fifo", dispatcher({}))
    os.umask(old := os.umask(0))  # read the umask without changing it
    server.open()
    st = os.stat(short_dir / "msrpd.fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    server.close()
    assert not (short_dir / "msrpd.fifo").exists()
    assert old == os.umask(old)


def test_stale_fifo_is_replaced_but_a_live_one_or_a_file_is_refused(short_dir: Path) -> None:
    fifo = short_dir / "msrpd.fifo"
    os.mkfifo(fifo, 0o644)  # left by a crashed run: nobody reads it
    first = ControlServer(fifo, dispatcher({}))
    first.open()
    assert stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    second = ControlServer(fifo, dispatcher({}))
    with pytest.raises(FileExistsError, match="in use"):
        second.open()
    first.close()
    fifo.write_text("not a fifo")
    with pytest.raises(FileExistsError, match="not a fifo"):
        second.open()
    assert fifo.read_text() == "not a fifo"


def test_kamailio_documented_request_gets_its_answer(loop: ServerLoop, short_dir: Path) -> None:
    # jsonrpcs README §7.2, Example 1.17, with our method name.
    payload = b'{\n "jsonrpc": "2.0",\n  "method": "echo",\n  "params": [1, "two"],\n'
    payload += b'  "reply_name": "kamailio_jsonrpc_reply_fifo",\n  "id": 1\n}\n'
    answer = raw_call(short_dir / "msrpd.fifo", payload, "kamailio_jsonrpc_reply_fifo")
    assert answer == {"jsonrpc": "2.0", "result": [1, "two"], "id": 1}


def test_ids_are_echoed_and_a_missing_id_is_answered_with_null(
    loop: ServerLoop, short_dir: Path
) -> None:
    fifo = short_dir / "msrpd.fifo"
    assert raw_call(fifo, request("echo", "r1", {"a": 1}, rid="abc"), "r1") == {
        "jsonrpc": "2.0",
        "result": {"a": 1},
        "id": "abc",
    }
    payload = b'{"jsonrpc":"2.0","method":"echo","params":[3],"reply_name":"r2"}'
    assert raw_call(fifo, payload, "r2") == {"jsonrpc": "2.0", "result": [3], "id": None}


@pytest.mark.parametrize(
    ("payload", "code", "rid"),
    [
        (b'{"jsonrpc":"2.0","method":echo,"id":7,"reply_name":"rx"}\n', PARSE_ERROR, None),
        (b'{"jsonrpc":"2.0","id":7,"reply_name":"rx","method":["a"}\n', PARSE_ERROR, None),
        (b'[{"jsonrpc":"2.0","method":"echo","id":7,"reply_name":"rx"}]\n', INVALID_REQUEST, None),
        (b'{"jsonrpc":"1.0","method":"echo","id":7,"reply_name":"rx"}\n', INVALID_REQUEST, 7),
        (b'{"method":"echo","id":7,"reply_name":"rx"}\n', INVALID_REQUEST, 7),
        (b'{"jsonrpc":"2.0","method":5,"id":7,"reply_name":"rx"}\n', INVALID_REQUEST, 7),
        (b'{"jsonrpc":"2.0","method":"echo","params":"x","id":7,"reply_name":"rx"}', -32600, 7),
        (b'{"jsonrpc":"2.0","method":"echo","id":[7],"reply_name":"rx"}\n', INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","method":"nosuch","id":7,"reply_name":"rx"}\n', METHOD_NOT_FOUND, 7),
        (b'{"jsonrpc":"2.0","method":"strict","id":7,"reply_name":"rx"}\n', INVALID_PARAMS, 7),
        (b'{"jsonrpc":"2.0","method":"boom","id":7,"reply_name":"rx"}\n', INTERNAL_ERROR, 7),
        (b'{"jsonrpc":"2.0","method":"unjsonable","id":7,"reply_name":"rx"}', INTERNAL_ERROR, 7),
    ],
)
def test_bad_requests_get_a_jsonrpc_error_and_the_fifo_keeps_serving(
    loop: ServerLoop, short_dir: Path, payload: bytes, code: int, rid: Any
) -> None:
    fifo = short_dir / "msrpd.fifo"
    answer = raw_call(fifo, payload, "rx")
    assert answer is not None
    assert answer["jsonrpc"] == "2.0" and answer["id"] == rid
    assert answer["error"]["code"] == code
    assert isinstance(answer["error"]["message"], str)
    assert raw_call(fifo, request("echo", "ok", ["after"]), "ok")["result"] == ["after"]  # type: ignore[index]


def test_internal_error_is_logged_with_its_message(
    loop: ServerLoop, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="msrpd.control.fifo"):
        answer = raw_call(short_dir / "msrpd.fifo", request("boom", "rb"), "rb")
    assert answer is not None and answer["error"]["data"] == "kaput"
    assert any("kaput" in (r.exc_text or "") for r in caplog.records)


def test_garbage_and_oversized_requests_are_dropped_and_logged(
    loop: ServerLoop, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = short_dir / "msrpd.fifo"
    with caplog.at_level(logging.WARNING, logger="msrpd.control.fifo"):
        assert raw_call(fifo, b"hello, is anybody there?\n", None) is None
        big = b'{"reply_name":"rbig","jsonrpc":"2.0","method":"echo","params":["'
        big += b"x" * (70 * 1024) + b'"],"id":1}\n'
        t0 = time.monotonic()
        answer = raw_call(fifo, big, "rbig")
        assert time.monotonic() - t0 < 2.0
        assert answer is not None and answer["error"]["code"] == PARSE_ERROR
        assert "over 65536 bytes" in answer["error"]["message"]
        assert raw_call(fifo, request("echo", "rok", [1]), "rok")["result"] == [1]  # type: ignore[index]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "not a JSON object" in messages and "over 65536 bytes" in messages


def test_request_without_reply_fifo_runs_and_is_not_answered(
    serve: Callable[..., ServerLoop], short_dir: Path
) -> None:
    calls: list[tuple[str, Any]] = []
    serve(dispatcher(echo_methods(calls)))
    fifo = short_dir / "msrpd.fifo"
    raw_call(fifo, request("echo", None, ["fire-and-forget"]), None)
    raw_call(fifo, request("echo", "r", ["second"]), "r")
    assert calls == [("echo", ["fire-and-forget"]), ("echo", ["second"])]
    assert sorted(os.listdir(short_dir)) == ["msrpd.fifo"]


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a.b", "", "x\\y", 5, "msrpd"])
def test_a_reply_name_that_is_not_a_plain_name_is_refused_and_not_run(
    short_dir: Path, name: object, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, Any]] = []
    fifo = short_dir / "msrpd"  # so that "msrpd" names the control fifo itself
    server = ControlServer(fifo, dispatcher(echo_methods(calls)))
    server.open()
    try:
        out = os.open(fifo, os.O_WRONLY)
        doc = {"jsonrpc": "2.0", "method": "echo", "id": 1, "reply_name": name}
        os.write(out, json.dumps(doc).encode())
        os.close(out)
        with caplog.at_level(logging.WARNING, logger="msrpd.control.fifo"):
            server.on_readable()
        assert calls == []
        assert "refused request" in caplog.text
        assert not server.wants_write()
    finally:
        server.close()


def test_reply_fifo_without_reader_neither_blocks_nor_breaks_the_server(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fifo = short_dir / "msrpd.fifo"
    server = ControlServer(fifo, dispatcher(echo_methods()))
    server.open()
    try:
        os.mkfifo(short_dir / "lonely", 0o600)  # made, never opened for reading
        out = os.open(fifo, os.O_WRONLY)
        os.write(out, request("echo", "lonely", [1]) + request("echo", "missing", [2]))
        os.close(out)
        with caplog.at_level(logging.WARNING, logger="msrpd.control.fifo"):
            t0 = time.monotonic()
            server.on_readable()
            assert time.monotonic() - t0 < 0.2
        assert "nobody reads" in caplog.text and "cannot open reply fifo" in caplog.text
        assert not server.wants_write()
        reply = os.open(short_dir / "lonely", os.O_RDONLY | os.O_NONBLOCK)
        out = os.open(fifo, os.O_WRONLY)
        os.write(out, request("echo", "lonely", ["now"]))
        os.close(out)
        server.on_readable()
        assert json.loads(read_reply(reply, 2.0))["result"] == ["now"]
        os.close(reply)
    finally:
        server.close()


def test_a_slow_reader_gets_the_rest_later_and_a_stuck_one_is_dropped(short_dir: Path) -> None:
    now = [1000.0]
    fifo = short_dir / "msrpd.fifo"
    server = ControlServer(fifo, dispatcher(echo_methods()), clock=lambda: now[0])
    server.open()
    try:
        readers = {}
        for name in ("slow", "stuck"):
            os.mkfifo(short_dir / name, 0o600)
            readers[name] = os.open(short_dir / name, os.O_RDONLY | os.O_NONBLOCK)
        out = os.open(fifo, os.O_WRONLY)
        os.write(out, request("big", "slow") + request("big", "stuck"))
        os.close(out)
        t0 = time.monotonic()
        server.on_readable()
        assert time.monotonic() - t0 < 0.5  # 2 MiB of answers, the pipes take 64 KiB each
        assert server.wants_write() and len(server.write_fds()) == 2
        data = b""
        while server.wants_write() and len(data) < (1 << 20):
            with contextlib.suppress(BlockingIOError):
                data += os.read(readers["slow"], 1 << 16)
            server.on_writable()
            if len(server.write_fds()) == 1:
                break
        data += read_reply(readers["slow"], 2.0)
        assert json.loads(data)["result"] == "x" * (1 << 20)
        assert server.wants_write()  # "stuck" never reads
        now[0] += REPLY_TIMEOUT + 1
        server.on_writable()
        assert not server.wants_write()
        partial = read_reply(readers["stuck"], 2.0)  # EOF after what the pipe held
        assert 0 < len(partial) < (1 << 20)
        for fd in readers.values():
            os.close(fd)
    finally:
        server.close()


def test_a_dead_writers_partial_request_is_dropped_when_the_next_one_comes(
    short_dir: Path,
) -> None:
    now = [1000.0]
    fifo = short_dir / "msrpd.fifo"
    server = ControlServer(fifo, dispatcher(echo_methods()), clock=lambda: now[0])
    server.open()
    try:
        os.mkfifo(short_dir / "r", 0o600)
        reply = os.open(short_dir / "r", os.O_RDONLY | os.O_NONBLOCK)
        out = os.open(fifo, os.O_WRONLY)
        os.write(out, b'{"jsonrpc": "2.0", "method": "echo", "params": [')  # then it died
        server.on_readable()
        now[0] += 5.0
        os.write(out, request("echo", "r", ["fresh"]))
        os.close(out)
        server.on_readable()
        assert json.loads(read_reply(reply, 2.0))["result"] == ["fresh"]
        os.close(reply)
    finally:
        server.close()


def test_two_requests_naming_the_same_reply_fifo_are_answered_in_order(
    loop: ServerLoop, short_dir: Path
) -> None:
    payload = request("echo", "same", [1], rid=1) + request("echo", "same", [2], rid=2)
    fifo = short_dir / "msrpd.fifo"
    os.mkfifo(short_dir / "same", 0o600)
    reply = os.open(short_dir / "same", os.O_RDONLY | os.O_NONBLOCK)
    out = os.open(fifo, os.O_WRONLY)
    os.write(out, payload)
    os.close(out)
    data = b""
    while data.count(b"\n") < 2:
        data += read_reply(reply, 2.0)
    os.close(reply)
    answers = [json.loads(line) for line in data.splitlines()]
    assert [a["id"] for a in answers] == [1, 2]


def test_eight_concurrent_client_threads_each_get_their_own_answer(
    loop: ServerLoop, settings: Any
) -> None:
    barrier = threading.Barrier(8)
    results: dict[int, Any] = {}

    def client(i: int) -> None:
        barrier.wait()
        for round_ in range(5):
            results[i * 100 + round_] = call(settings, "echo", [i, round_, "p" * 500], 5.0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 40
    for key, value in results.items():
        assert value == [key // 100, key % 100, "p" * 500]


def test_eight_concurrent_client_processes_each_get_their_own_answer(
    children: Children, short_dir: Path, settings: Any
) -> None:
    # Server and clients are all processes forked from this (thread-free) test process.
    server = ControlServer(short_dir / "msrpd.fifo", dispatcher(echo_methods()))
    server.open()
    wake_r, wake_w = os.pipe()
    go_r, go_w = os.pipe()
    server_pid = children.fork(lambda: run_select_loop(server, wake_r))
    server.close_in_child()  # the child serves; this process keeps none of its fds

    def client(i: int) -> None:
        os.read(go_r, 1)
        for round_ in range(10):
            want = [i, round_, "q" * (3000 if i % 2 else 10)]
            got = call(settings, "echo", want, 10.0)
            assert got == want, (got, want)

    pids = [children.fork(functools.partial(client, i)) for i in range(8)]
    os.write(go_w, b"g" * 8)
    assert [children.wait(pid) for pid in pids] == [0] * 8
    os.write(wake_w, b"x")
    assert children.wait(server_pid) == 0
    for fd in (wake_r, wake_w, go_r, go_w):
        os.close(fd)
    assert not [n for n in os.listdir(short_dir) if n.startswith("msrpd-ctl-")]
