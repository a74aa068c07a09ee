"""The supervisor's side of the workers' ctl sockets (msrpd/workers/ctl.py has the protocol).

Rules: synchronous and bounded. query_workers() asks many workers at once over non-blocking
sockets and one selector and gives up on the rest at the deadline, so stuck workers cost the
supervisor `timeout` seconds once, not once each.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..workers.ctl import encode_line

__all__ = ["WorkerCtlError", "query_worker", "query_workers"]

MAX_ANSWER: Final = 64 * 1024 * 1024


class WorkerCtlError(Exception):
    """A worker did not answer (refused, gone, timed out) or answered with an error."""


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
    pending = [_Call(path, encode_line({"method": m, "params": p})) for path, m, p in calls]
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
