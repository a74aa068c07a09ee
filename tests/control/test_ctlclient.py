"""`msrpd ctl` (click CliRunner) against a control server running in a thread."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from msrpd.control.client import CtlUnavailable, call, ctl, parse_param, render
from msrpd.control.rpc import INVALID_PARAMS, RpcError, dispatcher

from .conftest import ServerLoop

ROWS = [
    {"pid": 10, "role": "supervisor", "cpu": 0.5, "conns": None},
    {"pid": 2222, "role": "worker", "cpu": 12.25, "conns": 3},
]
CMAP = {
    "MAP_SIZE": 4,
    "CONLIST": [{"CONDATA": {"CITEMID": 1, "SESSIONID": "s1", "CONID": 99}}],
    "CONCOUNT": 1,
}


def methods() -> dict[str, Callable[[Any], Any]]:
    def fail(params: Any) -> Any:
        raise RpcError(INVALID_PARAMS, "fail wants nothing", {"hint": "none"})

    return {
        "echo": lambda params: params,
        "rows": lambda params: ROWS,
        "cmap": lambda params: CMAP,
        "nested": lambda params: {"level": "info", "workers": [{"slot": 0, "level": "info"}]},
        "fail": fail,
    }


@pytest.fixture
def config(short_dir: Path) -> Path:
    path = short_dir / "msrpd.toml"
    path.write_text(f'[core]\nrun_dir = "{short_dir}"\nchildren = 1\n')
    return path


@pytest.fixture
def running(serve: Callable[..., ServerLoop]) -> ServerLoop:
    return serve(dispatcher(methods()))


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(ctl, ["-c", str(config), *args])


def leftovers(short_dir: Path) -> list[str]:
    return [name for name in os.listdir(short_dir) if name.startswith("msrpd-ctl-")]


def test_params_that_read_as_numbers_are_sent_as_numbers(running: ServerLoop, config: Path) -> None:
    result = run(config, "--json", "echo", "12", "1.5", "-3", "abc", "nan", "1e3", "007", "true")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [12, 1.5, -3, "abc", "nan", 1000.0, "007", "true"]


def test_a_list_of_flat_objects_prints_as_a_table(running: ServerLoop, config: Path) -> None:
    result = run(config, "rows")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["pid", "role", "cpu", "conns"]
    assert lines[1].split() == ["10", "supervisor", "0.5", "-"]
    assert lines[2].split() == ["2222", "worker", "12.25", "3"]
    assert lines[1].index("10") == lines[2].index("2222") + 2  # numbers right-aligned


def test_kamailio_shaped_answers_print_readably(running: ServerLoop, config: Path) -> None:
    out = run(config, "cmap").stdout
    assert "MAP_SIZE  4" in out and "CONCOUNT  1" in out
    assert "CITEMID  SESSIONID  CONID" in out  # CONDATA wrappers unwrapped into a table
    out = run(config, "nested").stdout
    assert out.splitlines() == ["level  info", "workers:", "  slot  level", "     0  info"]


def test_json_output_is_the_result(running: ServerLoop, config: Path) -> None:
    result = run(config, "--json", "cmap")
    assert json.loads(result.stdout) == CMAP


def test_a_jsonrpc_error_exits_1_on_stderr(
    running: ServerLoop, config: Path, short_dir: Path
) -> None:
    result = run(config, "fail")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "error -32602: fail wants nothing ({'hint': 'none'})" in result.stderr
    result = run(config, "no.such")
    assert result.exit_code == 1 and "error -32601" in result.stderr
    assert leftovers(short_dir) == []


def test_not_running_exits_3(config: Path, short_dir: Path) -> None:
    result = run(config, "core.ps")
    assert result.exit_code == 3 and "no control fifo" in result.stderr
    os.mkfifo(short_dir / "msrpd.fifo", 0o600)  # left by a crash: nobody reads it
    result = run(config, "core.ps")
    assert result.exit_code == 3 and "not running" in result.stderr
    assert leftovers(short_dir) == []


def test_no_run_dir_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "msrpd.toml"
    config.write_text(f'[core]\nrun_dir = "{tmp_path / "nowhere"}"\n')
    result = run(config, "core.ps")
    assert result.exit_code == 3 and "is msrpd running?" in result.stderr


def test_no_answer_in_time_exits_3_and_removes_the_reply_fifo(
    config: Path, short_dir: Path
) -> None:
    fifo = short_dir / "msrpd.fifo"
    os.mkfifo(fifo, 0o600)
    deaf = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # reads nothing, answers nothing
    try:
        t0 = time.monotonic()
        result = run(config, "--timeout", "0.3", "core.ps")
        assert 0.25 < time.monotonic() - t0 < 2.0
        assert result.exit_code == 3 and "no answer within 0.3 s" in result.stderr
        assert leftovers(short_dir) == []
    finally:
        os.close(deaf)


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[core]\nchildren = 0\n")
    result = run(config, "core.ps")
    assert result.exit_code == 2 and "invalid configuration" in result.stderr


def test_a_request_over_pipe_buf_is_refused(running: ServerLoop, config: Path) -> None:
    result = run(config, "echo", "x" * 5000)
    assert result.exit_code == 1 and "at most 4096" in result.stderr


def test_call_is_usable_without_click(running: ServerLoop, settings: Any) -> None:
    assert call(settings, "echo", {"k": "v"}) == {"k": "v"}
    with pytest.raises(RpcError) as info:
        call(settings, "fail")
    assert info.value.code == INVALID_PARAMS and info.value.data == {"hint": "none"}


def test_call_raises_ctl_unavailable_when_nothing_runs(settings: Any) -> None:
    with pytest.raises(CtlUnavailable, match="no control fifo"):
        call(settings, "core.ps", None, 0.5)


def test_parse_param_and_render_edges() -> None:
    assert parse_param("0") == 0 and parse_param("-0.5") == -0.5
    assert parse_param("Infinity") == "Infinity" and parse_param("null") == "null"
    assert parse_param('"quoted"') == '"quoted"' and parse_param("") == ""
    assert render([]) == "(none)"
    assert render(None) == "-" and render(True) == "true"
    assert render({"a": [1, 2], "b": []}) == "a  1,2\nb  -"
    assert render(["x", {"y": {"z": 1}}]) == "x\n  y:\n    z  1"
