"""`msrpd ctl METHOD [PARAMS...]`: one JSON-RPC request to the control fifo, and its answer.

Rules (the protocol is fifo.py's and rpc.py's, Kamailio's jsonrpcs fifo transport):
- A private reply fifo, mode 0600, with a unique name without dots, is made in the control
  fifo's directory and opened O_RDONLY|O_NONBLOCK before the request is written, so the
  server always finds its reader. It is removed whatever happens.
- The request goes in one write() of at most PIPE_BUF bytes, so concurrent clients never
  interleave; a larger one is refused here.
- The answer is read with poll() until EOF or the deadline. Linux reports POLLHUP on a fifo
  only once a writer has come and gone, so waiting before the server opens the reply fifo
  does not spin.
- PARAMS that read as JSON numbers are sent as numbers, everything else as strings.
- `--cluster` adds the parameter "cluster" to a listing method (CLUSTER_LISTINGS): every
  node's rows, each naming its node.
- Exit codes: 0 answered, 1 a JSON-RPC error (on stderr), 2 invalid configuration,
  3 msrpd not running, no control fifo, or no answer in time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import select
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click

from ..cli.options import config_option, settings_or_exit
from ..config import Settings
from ..rundir import fifo_path
from .fifo import PIPE_BUF
from .rpc import RpcError

__all__ = ["CtlUnavailable", "call", "ctl", "parse_param", "render"]

EXIT_RPC_ERROR: Final = 1
EXIT_UNAVAILABLE: Final = 3
MAX_ANSWER: Final = 256 * 1024 * 1024
CLUSTER_LISTINGS: Final = ("msrp.cmaplist", "msrp.conns")
"""The listing methods that take a "cluster" parameter: `--cluster` adds it."""


class CtlUnavailable(Exception):
    """msrpd does not run, has no control fifo, or did not answer in time."""


def call(settings: Settings, method: str, params: Any = None, timeout: float = 5.0) -> Any:
    """Run one control method of the msrpd that `settings` name; its result.

    Raises:
        CtlUnavailable: not running, no fifo, no answer within `timeout` seconds.
        RpcError: the method answered with a JSON-RPC error.
        ValueError: the request is over PIPE_BUF bytes.
    """
    fifo = fifo_path(settings)
    name = f"msrpd-ctl-{os.getpid()}-{secrets.token_hex(8)}"
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1, "reply_name": name}
    if params is not None:
        request["params"] = params
    data = json.dumps(request, separators=(",", ":")).encode() + b"\n"
    if len(data) > PIPE_BUF:
        raise ValueError(f"request of {len(data)} bytes; at most {PIPE_BUF} can be sent")
    deadline = time.monotonic() + timeout
    with _reply_fifo(fifo.parent / name) as reply_fd:
        _send(fifo, data, deadline)
        answer = _receive(reply_fd, deadline, timeout)
    return _result(answer)


@contextlib.contextmanager
def _reply_fifo(path: Path) -> Iterator[int]:
    """Make the reply fifo and open it for reading; remove it on the way out."""
    try:
        os.mkfifo(path, 0o600)
    except FileNotFoundError:
        raise CtlUnavailable(f"no directory {path.parent} (is msrpd running?)") from None
    except OSError as exc:
        raise CtlUnavailable(f"cannot make a reply fifo in {path.parent}: {exc.strerror}") from None
    try:
        os.chmod(path, 0o600)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        os.unlink(path)


def _send(fifo: Path, data: bytes, deadline: float) -> None:
    try:
        if not stat.S_ISFIFO(os.stat(fifo).st_mode):
            raise CtlUnavailable(f"{fifo} is not a fifo")
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CtlUnavailable(f"no control fifo at {fifo} (is msrpd running?)") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise CtlUnavailable(f"msrpd is not running (nobody reads {fifo})") from None
        raise CtlUnavailable(f"cannot open {fifo}: {exc.strerror}") from None
    try:
        for _ in _polling(fd, select.POLLOUT, deadline, "the control fifo stays full"):
            try:
                os.write(fd, data)  # <= PIPE_BUF: all of it or EAGAIN (pipe(7))
                return
            except BlockingIOError:
                continue
    finally:
        os.close(fd)


def _receive(fd: int, deadline: float, timeout: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for _ in _polling(fd, select.POLLIN, deadline, f"no answer within {timeout:g} s"):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not data:  # EOF: the server wrote its answer and closed
            break
        chunks.append(data)
        size += len(data)
        if size > MAX_ANSWER:
            raise CtlUnavailable(f"answer over {MAX_ANSWER} bytes")
    if not chunks:
        raise CtlUnavailable("msrpd closed the reply fifo without an answer")
    return b"".join(chunks)


def _polling(fd: int, events: int, deadline: float, why: str) -> Iterator[None]:
    poller = select.poll()
    poller.register(fd, events)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CtlUnavailable(why)
        if poller.poll(math.ceil(remaining * 1000)):
            yield


def _result(answer: bytes) -> Any:
    try:
        body = json.loads(answer)
    except ValueError:
        raise CtlUnavailable("the answer is not JSON") from None
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise CtlUnavailable("the answer is not a JSON-RPC 2.0 response")
    error = body.get("error")
    if isinstance(error, dict):
        raise RpcError(int(error.get("code", 0)), str(error.get("message")), error.get("data"))
    return body.get("result")


def parse_param(text: str) -> Any:
    """A finite JSON number stays a number; anything else is a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return text


# -- showing results ------------------------------------------------------------------------


def render(value: Any) -> str:
    """A readable text: key/value lines for objects, a table for a list of flat objects."""
    return "\n".join(_render(value, ""))


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _flat(value: Any) -> bool:
    return _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def _unwrap(rows: list[Any]) -> list[Any]:
    # Kamailio wraps each row in the same one key ({"CONDATA": {...}}): show what is inside.
    keys = {next(iter(r)) for r in rows if isinstance(r, dict) and len(r) == 1}
    if len(keys) != 1 or not all(isinstance(r, dict) and len(r) == 1 for r in rows):
        return rows
    (key,) = keys
    inner = [r[key] for r in rows]
    return inner if all(isinstance(i, dict) for i in inner) else rows


def _render(value: Any, indent: str) -> list[str]:
    if isinstance(value, list):
        rows = _unwrap(value)
        if not rows:
            return [indent + "(none)"]
        if all(isinstance(r, dict) and all(_flat(v) for v in r.values()) for r in rows):
            return [indent + line for line in _table(rows)]
        out: list[str] = []
        for row in rows:
            out.extend([indent + _cell(row)] if _flat(row) else _render(row, indent + "  "))
        return out
    if isinstance(value, dict):
        width = max((len(str(k)) for k, v in value.items() if _flat(v)), default=0)
        out = []
        for key, item in value.items():
            if _flat(item):
                out.append(f"{indent}{key!s:<{width}}  {_cell(item)}")
            else:
                out.append(f"{indent}{key}:")
                out.extend(_render(item, indent + "  "))
        return out
    return [indent + _cell(value)]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows)
        for c in columns
    ]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line([str(c) for c in columns]), *(line(values) for values in cells)]


# -- the command ----------------------------------------------------------------------------


# ignore_unknown_options: a negative number such as -3 is a PARAM, not an option.
@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True}
)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--cluster",
    "everywhere",
    is_flag=True,
    help=f"Every node's rows, not this node's ({', '.join(CLUSTER_LISTINGS)}).",
)
@click.argument("method")
@click.argument("params", nargs=-1)
def ctl(
    config: Path | None,
    as_json: bool,
    timeout: float,
    everywhere: bool,
    method: str,
    params: tuple[str, ...],
) -> None:
    """Run a control METHOD (system.listMethods lists them) with PARAMS."""
    if everywhere:
        if method not in CLUSTER_LISTINGS:
            raise click.UsageError(f"--cluster lists with {', '.join(CLUSTER_LISTINGS)} only")
        params = (*params, "cluster")
    settings = settings_or_exit(config)
    try:
        result = call(settings, method, [parse_param(p) for p in params] or None, timeout)
    except CtlUnavailable as exc:
        click.echo(f"msrpd ctl: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except RpcError as exc:
        detail = f" ({exc.data})" if exc.data is not None else ""
        click.echo(f"msrpd ctl: error {exc.code}: {exc.message}{detail}", err=True)
        sys.exit(EXIT_RPC_ERROR)
    except ValueError as exc:
        click.echo(f"msrpd ctl: {exc}", err=True)
        sys.exit(EXIT_RPC_ERROR)
    click.echo(json.dumps(result, indent=2) if as_json else render(result))
