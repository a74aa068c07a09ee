"""Worker control: a Unix socket per worker, through which the supervisor asks for live state.

Rules:
- One socket per worker process, run_dir/ctl-<slot>-<generation>.sock (rundir.ctl_path),
  mode 0600 like the handoff sockets (links.py): bound, chmod'ed, only then listened on.
- Protocol: newline-delimited JSON, any number of requests per connection, answered in
  order. A request is {"method": name, "params": {...}} (params optional); the answer is
  {"result": value} or {"error": text}. A line over MAX_LINE is answered with an error and
  the connection closed; a connection idle for IDLE_TIMEOUT is closed.
- Handlers run on the worker's event loop, so they must be quick: read ctx.conns, close a
  connection, set a log level. A handler may return an awaitable. ValueError and TypeError
  mean a bad request; any other exception is logged with its traceback.
- The supervisor's side (the client) is msrpd/control/workerctl.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["LOG_LEVELS", "MAX_LINE", "Handler", "WorkerCtlServer", "encode_line", "worker_handlers"]

logger = logging.getLogger(__name__)

MAX_LINE: Final = 64 * 1024
IDLE_TIMEOUT: Final = 10.0
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

Handler = Callable[[dict[str, Any]], Any]
"""handler(params) -> a JSON-serialisable result (or an awaitable of one)."""


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
                    writer.write(encode_line({"error": f"request over {MAX_LINE} bytes"}))
                    await writer.drain()
                    return
                if not line.endswith(b"\n"):
                    return  # EOF
                writer.write(encode_line(await self._answer(line)))
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


def encode_line(message: dict[str, Any]) -> bytes:
    """One message of the protocol: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def worker_handlers(ctx: WorkerContext) -> dict[str, Handler]:
    """The handlers a worker registers: "conns", "close" {conid}, "log.level" {level}."""

    def conns(params: dict[str, Any]) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "conid": conn.conid,
                "peer": conn.peer_key,
                "local": conn.wire.local_sock,
                "transport": conn.wire.kind,
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
