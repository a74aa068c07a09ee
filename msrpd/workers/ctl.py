"""Worker control: a Unix socket per worker, through which the supervisor asks for live state.

Rules:
- One socket per worker process, run_dir/ctl-<slot>-<generation>.sock (worker_ctl_path),
  mode 0600 like the handoff sockets (links.py): bound, chmod'ed, only then listened on.
- Protocol: newline-delimited JSON, any number of requests per connection, answered in
  order. A request is {"method": name, "params": {...}} (params optional); the answer is
  {"result": value} or {"error": text}. A line over MAX_LINE is answered with an error and
  the connection closed; a connection idle for IDLE_TIMEOUT is closed.
- Handlers run on the worker's event loop, so they must be quick: read ctx.conns, close a
  connection, set a log level. A handler may return an awaitable. ValueError and TypeError
  mean a bad request; any other exception is logged with its traceback.
- The supervisor's side is synchronous and bounded: query_workers() asks many workers at once
  over non-blocking sockets and one selector and gives up on the rest at the deadline, so
  stuck workers cost the supervisor `timeout` seconds once, not once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = [
    "Handler",
    "WorkerCtlError",
    "WorkerCtlServer",
    "query_worker",
    "query_workers",
    "worker_ctl_path",
    "worker_handlers",
]

logger = logging.getLogger(__name__)

MAX_LINE: Final = 64 * 1024
MAX_ANSWER: Final = 64 * 1024 * 1024
IDLE_TIMEOUT: Final = 10.0
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

Handler = Callable[[dict[str, Any]], Any]
"""handler(params) -> a JSON-serialisable result (or an awaitable of one)."""


class WorkerCtlError(Exception):
    """A worker did not answer (refused, gone, timed out) or answered with an error."""


def worker_ctl_path(run_dir: Path, slot: int, generation: int) -> Path:
    return run_dir / f"ctl-{slot}-{generation}.sock"


# -- the worker's side ----------------------------------------------------------------------


class WorkerCtlServer:
    """An asyncio Unix-socket server answering the supervisor's control requests."""

    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler],
        *,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.idle_timeout = idle_timeout
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on `path` (mode 0600), replacing a stale socket file left there."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect yet
            self._inode = os.stat(self.path).st_ino
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=MAX_LINE)
        except BaseException:
            sock.close()
            raise

    async def close(self) -> None:
        """Stop listening, close every connection, remove the socket file if still ours."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except ValueError:  # over MAX_LINE: the stream cannot be trusted any more
                    writer.write(_line({"error": f"request over {MAX_LINE} bytes"}))
                    await writer.drain()
                    return
                if not line.endswith(b"\n"):
                    return  # EOF
                writer.write(_line(await self._answer(line)))
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"error": f"not JSON: {exc}"}
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        method, params = request.get("method"), request.get("params")
        params = {} if params is None else params
        handler = self.handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            return {"error": f"unknown method {method!r}"}
        if not isinstance(params, dict):
            return {"error": "params must be an object"}
        try:
            result = handler(params)
            if inspect.isawaitable(result):
                result = await result
        except (ValueError, TypeError) as exc:
            return {"error": str(exc)}
        except Exception as exc:
            logger.exception("worker control method %s failed", method)
            return {"error": f"internal error: {exc}"}
        try:
            json.dumps(result)
        except (ValueError, TypeError) as exc:
            logger.error("worker control method %s: result is not JSON: %s", method, exc)
            return {"error": f"internal error: {exc}"}
        return {"result": result}


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def worker_handlers(ctx: WorkerContext) -> dict[str, Handler]:
    """The handlers a worker registers: "conns", "close" {conid}, "log.level" {level}."""

    def conns(params: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "conid": conn.conid,
                "peer": conn.peer_key,
                "local": conn.wire.local_sock,
                "age": round(now - conn.stats.opened, 1),
                "bytes_in": conn.stats.bytes_in,
                "bytes_out": conn.stats.bytes_out,
                "sessions": list(conn.stats.sessions),
            }
            for conn in list(ctx.conns.values())
        ]

    def close(params: dict[str, Any]) -> bool:
        conid = params.get("conid")
        if type(conid) is not int:
            raise ValueError("close needs an integer conid")
        conn = ctx.conns.get(conid)
        if conn is None or conn.closed:
            return False
        conn.close("killed (msrp.session_kill)")
        return True

    return {"conns": conns, "close": close, "log.level": set_log_level}


def set_log_level(params: dict[str, Any]) -> str:
    """Set the root logger's level when params has "level"; the level now in force."""
    level = params.get("level")
    root = logging.getLogger()
    if level is not None:
        if level not in LOG_LEVELS:
            raise ValueError(f"level must be one of {', '.join(LOG_LEVELS)}")
        root.setLevel(str(level).upper())
    return logging.getLevelName(root.getEffectiveLevel()).lower()


# -- the supervisor's side ------------------------------------------------------------------

_PENDING: Final = object()


@dataclass(slots=True, eq=False)
class _Call:
    path: Path
    out: bytes
    sock: socket.socket | None = None
    sent: int = 0
    got: bytearray = field(default_factory=bytearray)
    outcome: Any = _PENDING


def query_worker(path: Path, method: str, params: Any = None, timeout: float = 1.0) -> Any:
    """Ask one worker; blocks for at most `timeout` seconds.

    Raises:
        WorkerCtlError: no answer in time, connection refused, or an error answer.
    """
    (outcome,) = query_workers([(path, method, params)], timeout)
    if isinstance(outcome, WorkerCtlError):
        raise outcome
    return outcome


def query_workers(calls: Sequence[tuple[Path, str, Any]], timeout: float = 1.0) -> list[Any]:
    """Ask several workers at once; blocks for at most `timeout` seconds in all.

    Returns:
        One item per call, in order: the result, or a WorkerCtlError instance.
    """
    pending = [_Call(path, _line({"method": m, "params": p})) for path, m, p in calls]
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        try:
            for call in pending:
                _connect(call, selector)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in selector.select(remaining):
                    _step(key.data, selector)
        finally:
            for call in pending:
                if call.outcome is _PENDING:
                    call.outcome = WorkerCtlError(f"{call.path.name}: no answer in {timeout} s")
                if call.sock is not None:
                    call.sock.close()
    return [call.outcome for call in pending]


def _connect(call: _Call, selector: selectors.BaseSelector) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    call.sock = sock
    try:
        sock.connect(str(call.path))  # a Unix stream connect completes or fails at once
    except OSError as exc:
        call.outcome = WorkerCtlError(f"{call.path.name}: {exc.strerror or exc}")
        return
    selector.register(sock, selectors.EVENT_WRITE, call)


def _step(call: _Call, selector: selectors.BaseSelector) -> None:
    sock = call.sock
    assert sock is not None
    try:
        if call.sent < len(call.out):
            call.sent += sock.send(call.out[call.sent :])
            if call.sent == len(call.out):
                selector.modify(sock, selectors.EVENT_READ, call)
            return
        data = sock.recv(65536)
    except BlockingIOError:
        return
    except OSError as exc:
        _finish(call, selector, WorkerCtlError(f"{call.path.name}: {exc.strerror or exc}"))
        return
    call.got += data
    if not data:
        _finish(call, selector, WorkerCtlError(f"{call.path.name}: closed without an answer"))
    elif call.got.endswith(b"\n"):
        _finish(call, selector, _decode(call))
    elif len(call.got) > MAX_ANSWER:
        _finish(call, selector, WorkerCtlError(f"{call.path.name}: answer too large"))


def _finish(call: _Call, selector: selectors.BaseSelector, outcome: Any) -> None:
    assert call.sock is not None
    selector.unregister(call.sock)
    call.outcome = outcome


def _decode(call: _Call) -> Any:
    try:
        answer = json.loads(call.got)
    except ValueError:
        return WorkerCtlError(f"{call.path.name}: answer is not JSON")
    if not isinstance(answer, dict) or not ("result" in answer or "error" in answer):
        return WorkerCtlError(f"{call.path.name}: unexpected answer")
    if "error" in answer:
        return WorkerCtlError(f"{call.path.name}: {answer['error']}")
    return answer["result"]
