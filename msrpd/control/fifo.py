"""The control fifo: JSON-RPC 2.0 over a named pipe, as Kamailio's jsonrpcs fifo transport.

Rules (kamailio src/modules/jsonrpcs/README §7.2 "JSONRPC Over FIFO"):
- A request is a JSON-RPC 2.0 request object plus "reply_name": the name of a fifo in the
  reply directory (the control fifo's own) that the client made and opened for reading
  before writing. The answer, a JSON-RPC response and a newline, is written there and the
  reply fifo closed: the client reads to EOF.
- reply_name is a plain name: one with '.', '/' or '\\' is refused and not run, as jsonrpcs
  refuses it. The reply fifo is opened O_WRONLY|O_NONBLOCK|O_NOFOLLOW and must be a fifo with
  one link. Nobody reading it: the answer is logged and dropped (jsonrpcs sleeps and retries;
  the supervisor must not).
- No reply_name: run, not answered (as jsonrpcs). A reply_name but no "id": answered, id null.
- Concurrent clients: a request must fit in PIPE_BUF (4096 bytes) and go in one write(), which
  the kernel keeps whole; `msrpd ctl` refuses larger ones. Documents up to 64 KiB are read,
  but one over PIPE_BUF is only safe while no other client writes.
- Bad input never raises into the caller and never sticks the fifo. Over 64 KiB, not a JSON
  object or array, or mismatched brackets: dropped up to the next newline and logged. A partial
  document whose writer went quiet for STALE_PARTIAL s: dropped when the next bytes come.
  -32700 and -32600 are answered when a reply_name can be read from the text; -32601 and
  -32602 come from dispatch as RpcError; any other exception is logged and answered -32603.

Strategy: non-blocking, driven by the supervisor's select loop (rpc.py has the JSON-RPC side).
on_readable() reads at most MAX_READ_PER_CALL; DocumentSplitter cuts documents out by
counting brackets outside strings (as jsonrpcs' jsonrpc_read_stream does); each is parsed,
dispatched and answered. An answer is written as far as the reply fifo takes it and the rest
waits in a bounded queue: select on write_fds() too, and call on_writable() while
wants_write(); what is not read within REPLY_TIMEOUT is dropped. Our own write descriptor on
the fifo keeps read() from seeing EOF.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .rpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    Dispatch,
    RpcError,
    encode_answer,
    invalid_request,
    valid_id,
)
from .splitter import Discarded, DocumentSplitter

__all__ = ["PIPE_BUF", "ControlServer", "valid_reply_name"]

logger = logging.getLogger(__name__)

PIPE_BUF: Final = 4096  # POSIX minimum 512; Linux 4096: writes up to this size stay whole
MAX_READ_PER_CALL: Final = 256 * 1024  # so a flood cannot hold the supervisor loop
MAX_PENDING_REPLIES: Final = 64
MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
REPLY_TIMEOUT: Final = 10.0
STALE_PARTIAL: Final = 1.0
_NAME_MAX: Final = 255
_FORBIDDEN: Final = frozenset("./\\\0")
_REPLY_NAME: Final = re.compile(rb'"reply_name"\s*:\s*"([^"\\]{1,255})"')


def valid_reply_name(name: object) -> bool:
    """A plain file name without '.', '/', '\\' or NUL (jsonrpcs' rule), at most 255 bytes."""
    if not isinstance(name, str) or not name or _FORBIDDEN.intersection(name):
        return False
    return len(name.encode("utf-8", "surrogateescape")) <= _NAME_MAX


# -- splitting the byte stream into documents -----------------------------------------------


# -- the server -----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Reply:
    path: Path
    fd: int
    data: bytes
    deadline: float
    offset: int = 0


class ControlServer:
    """The supervisor's end of the control fifo (see the module docstring)."""

    def __init__(
        self,
        fifo_path: Path,
        dispatch: Dispatch,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fifo_path = fifo_path
        self.reply_dir = fifo_path.parent
        self.dispatch = dispatch
        self._clock = clock
        self._rfd = -1
        self._wfd = -1
        self._inode: tuple[int, int] | None = None
        self._splitter = DocumentSplitter()
        self._last_data = 0.0
        self._replies: dict[Path, _Reply] = {}

    # -- lifetime ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the fifo (mode 0600), replacing a stale one, and open it.

        Raises:
            FileExistsError: the path is not a fifo, or another process reads that fifo.
            OSError: it cannot be made or opened.
        """
        self._remove_stale()
        os.mkfifo(self.fifo_path, 0o600)
        try:
            os.chmod(self.fifo_path, 0o600)  # never wider; umask may have made it narrower
            self._rfd = os.open(self.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._wfd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(self._rfd)
            self._inode = (st.st_dev, st.st_ino)
        except BaseException:
            self._close_fds()
            os.unlink(self.fifo_path)
            raise

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.fifo_path)
        except FileNotFoundError:
            return
        if not stat.S_ISFIFO(st.st_mode):
            raise FileExistsError(f"{self.fifo_path} exists and is not a fifo")
        try:
            fd = os.open(self.fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            os.unlink(self.fifo_path)  # nobody reads it: left by a crashed run
            logger.info("removed the stale control fifo %s", self.fifo_path)
            return
        os.close(fd)
        raise FileExistsError(f"control fifo {self.fifo_path} is in use by another process")

    def fileno(self) -> int:
        return self._rfd

    def close(self) -> None:
        """Close everything and remove the fifo (if it is still ours)."""
        self._close_fds()
        try:
            st = os.lstat(self.fifo_path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.fifo_path)
        except FileNotFoundError:
            pass
        self._inode = None

    def close_in_child(self) -> None:
        """In a forked child: close the inherited descriptors, leave the fifo in place."""
        self._close_fds()
        self._inode = None

    def _close_fds(self) -> None:
        for fd in (self._rfd, self._wfd, *(r.fd for r in self._replies.values())):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        self._replies.clear()

    # -- reading ----------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Read and serve what the fifo holds; never blocks, never raises."""
        try:
            self._read()
        except Exception:
            logger.exception("control fifo: unexpected error")
        self.on_writable()

    def _read(self) -> None:
        total = 0
        while total < MAX_READ_PER_CALL and self._rfd >= 0:
            try:
                data = os.read(self._rfd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            total += len(data)
            now = self._clock()
            pieces: list[bytes | Discarded] = []
            if self._splitter.partial and now - self._last_data > STALE_PARTIAL:
                stale = self._splitter.drop_partial()
                pieces.append(Discarded("incomplete request, its writer went quiet", stale))
            self._last_data = now
            for piece in [*pieces, *self._splitter.feed(data)]:
                if isinstance(piece, bytes):
                    self._serve(piece)
                    continue
                logger.warning(
                    "control fifo: dropped %d bytes: %s", len(piece.sample), piece.reason
                )
                self._salvage(piece.sample, RpcError(PARSE_ERROR, f"Parse error: {piece.reason}"))

    def _salvage(self, text: bytes, error: RpcError) -> None:
        # The request cannot be read as an object: answer where it says, if it says.
        match = _REPLY_NAME.search(text)
        name = "" if match is None else match.group(1).decode("utf-8", "replace")
        if valid_reply_name(name):
            self._answer(self.reply_dir / name, None, {"error": error.as_error()})

    def _serve(self, doc: bytes) -> None:
        try:
            request = json.loads(doc)
        except (ValueError, RecursionError) as exc:
            logger.warning("control fifo: unreadable request: %s", exc)
            self._salvage(doc, RpcError(PARSE_ERROR, f"Parse error: {exc}"))
            return
        if not isinstance(request, dict):
            logger.warning("control fifo: a request must be one JSON object")
            self._salvage(doc, RpcError(INVALID_REQUEST, "Invalid Request: not an object"))
            return
        name = request.get("reply_name")
        if name is not None and (not valid_reply_name(name) or self._is_own(name)):
            logger.warning("control fifo: refused request with reply_name %.80r", name)
            return
        target = None if name is None else self.reply_dir / name
        rid = request.get("id") if valid_id(request.get("id")) else None
        problem = invalid_request(request)
        if problem is not None:
            logger.warning("control fifo: invalid request: %s", problem)
            self._answer(target, rid, {"error": {"code": INVALID_REQUEST, "message": problem}})
        else:
            self._answer(target, rid, self._call(request["method"], request.get("params")))

    def _is_own(self, name: object) -> bool:
        return isinstance(name, str) and self.reply_dir / name == self.fifo_path

    def _call(self, method: str, params: Any) -> dict[str, Any]:
        """{"result": ...}, or {"error": ...} when the method failed."""
        try:
            return {"result": self.dispatch(method, params)}
        except RpcError as exc:
            return {"error": exc.as_error()}
        except Exception as exc:
            logger.exception("control method %s failed", method)
            return {
                "error": {"code": INTERNAL_ERROR, "message": "Internal error", "data": str(exc)}
            }

    # -- answering --------------------------------------------------------------------------

    def _answer(self, target: Path | None, rid: Any, outcome: dict[str, Any]) -> None:
        if target is None:
            return
        data, queued = encode_answer(rid, outcome), self._replies.get(target)
        full = queued is None and len(self._replies) >= MAX_PENDING_REPLIES
        if full or self._pending_bytes() + len(data) > MAX_PENDING_BYTES:
            logger.warning("control fifo: reply queue full, answer to %s dropped", target)
        elif queued is not None:  # the same reply fifo again: after what waits for it
            queued.data, queued.offset = queued.data[queued.offset :] + data, 0
        elif (fd := _open_reply(target)) is not None:
            reply = _Reply(target, fd, data, self._clock() + REPLY_TIMEOUT)
            if _write(reply):
                os.close(fd)
            else:
                self._replies[target] = reply

    def _pending_bytes(self) -> int:
        return sum(len(r.data) - r.offset for r in self._replies.values())

    def wants_write(self) -> bool:
        """Whether answers wait: select on write_fds() too, then call on_writable()."""
        return bool(self._replies)

    def write_fds(self) -> list[int]:
        return [reply.fd for reply in self._replies.values()]

    def on_writable(self) -> None:
        """Go on writing queued answers; drop those past REPLY_TIMEOUT. Never blocks."""
        now = self._clock()
        for path, reply in list(self._replies.items()):
            done = _write(reply)
            if not done and now > reply.deadline:
                logger.warning("control fifo: answer to %s not read in time, dropped", path)
                done = True
            if done:
                os.close(reply.fd)
                del self._replies[path]


def _open_reply(path: Path) -> int | None:
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            logger.warning("control fifo: nobody reads %s, answer dropped", path)
        else:
            logger.warning("control fifo: cannot open reply fifo %s: %s", path, exc.strerror)
        return None
    st = os.fstat(fd)
    if not stat.S_ISFIFO(st.st_mode) or st.st_nlink != 1:
        logger.warning("control fifo: %s is not a fifo with one link, answer dropped", path)
        os.close(fd)
        return None
    return fd


def _write(reply: _Reply) -> bool:
    """Write what the reply fifo takes; True when nothing is left (written or dropped)."""
    view = memoryview(reply.data)
    while reply.offset < len(view):
        try:
            reply.offset += os.write(reply.fd, view[reply.offset :])
        except BlockingIOError:
            return False
        except OSError as exc:
            logger.warning("control fifo: answer to %s dropped: %s", reply.path, exc.strerror)
            return True
    return True
