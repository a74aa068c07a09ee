"""msrp.conns rows: every worker's connections, asked over the workers' ctl sockets all at
once within WORKER_TIMEOUT. The supervisor lists its node's this way (methods.py), and the
cluster agent the same way when another node asks (cluster/listconns.py), so a row is the
same whichever node shows it.

Rules: a worker that does not answer, or answers something else than a list of connections,
is one row {slot, generation, pid, "error"}; it never hides the other workers' rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sessions import WORKER_TIMEOUT
from .workerctl import WorkerCtlError, query_workers

__all__ = ["Who", "node_conns"]

Who = dict[str, Any]
"""A worker as a row names it: {"slot", "generation", "pid"}."""


def node_conns(workers: Sequence[tuple[Who, Path]]) -> list[dict[str, Any]]:
    """The connections of `workers` (each named, with its ctl socket), worker by worker."""
    answers = query_workers([(path, "conns", {}) for _, path in workers], WORKER_TIMEOUT)
    rows: list[dict[str, Any]] = []
    for (who, _), answer in zip(workers, answers, strict=True):
        if isinstance(answer, WorkerCtlError):
            rows.append({**who, "error": str(answer)})
            continue
        try:
            rows.extend({**who, **_conn_row(conn)} for conn in answer)
        except (TypeError, KeyError, ValueError):
            rows.append({**who, "error": "unexpected answer"})
    return rows


def _conn_row(conn: dict[str, Any]) -> dict[str, Any]:
    return {
        "conid": f"{conn['conid']:x}",
        "peer": conn.get("peer"),
        "local": conn.get("local"),
        "transport": conn.get("transport"),
        "age": conn.get("age"),
        "bytes_in": conn.get("bytes_in"),
        "bytes_out": conn.get("bytes_out"),
        "sessions": conn.get("sessions"),
    }
