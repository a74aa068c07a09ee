"""Sessions as the control methods show and end them: a cmap entry as Kamailio's CONDATA, and
the kill of a session this node holds, shared by msrp.session_kill (supervisor) and the
cluster agent acting on a peer's kill (cluster/kills.py), so a kill asked on another node is
exactly a local one.

Rules: a kill removes the cmap entry (expired but not yet swept ones too) and asks the worker
that owns the connection (its slot and generation are in the conid) to close it, waiting
WORKER_TIMEOUT at most; a worker that does not answer leaves "closed" None.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..shm import Cmap, CmapEntry
from ..workers.handoff import conid_owner
from .workerctl import WorkerCtlError, query_worker

__all__ = ["WORKER_TIMEOUT", "condata", "kill_session", "kill_wait", "remote_condata"]

logger = logging.getLogger(__name__)

WORKER_TIMEOUT: Final = 1.0

CtlPathOf = Callable[[int, int], Path | None]
"""(slot, generation) -> that worker's ctl socket, None when no such worker runs."""


def kill_wait(timeout: float) -> float:
    """How long the cluster agent waits, in all, for a kill on another node: Redis and the
    owner's agent ([cluster] `timeout`), and the owner's worker (WORKER_TIMEOUT)."""
    return timeout + WORKER_TIMEOUT


def condata(entry: CmapEntry) -> dict[str, Any]:
    return {
        "CITEMID": zlib.crc32(entry.sessid.encode("utf-8", "surrogateescape")),
        "SESSIONID": entry.sessid,
        "PEER": entry.peer,
        "ADDR": entry.addr,
        "SOCK": entry.sock,
        "EXPIRES": time.ctime(entry.expires),
        "CONID": entry.conid,
        "FLAGS": 0,
    }


def remote_condata(row: dict[str, Any]) -> dict[str, Any]:
    """A session of another node, from the directory (token, node, expiry): what it knows."""
    sessid, expires = str(row["sessid"]), row["expires"]
    return {
        "CITEMID": zlib.crc32(sessid.encode("utf-8", "surrogateescape")),
        "SESSIONID": sessid,
        "EXPIRES": None if expires is None else time.ctime(float(expires)),
        "NODE": row["node"],
    }


def kill_session(cmap: Cmap, sessid: str, ctl_path_of: CtlPathOf) -> dict[str, Any]:
    """End session `sessid` of this node: {"killed": False} when it holds none, else
    {"killed", "conid" (hex), "closed"}. Blocks WORKER_TIMEOUT at most."""
    entry = cmap.lookup(sessid, -math.inf)  # expired but not yet swept ones too
    if entry is None:
        return {"killed": False}
    killed = cmap.delete(sessid)
    path = ctl_path_of(*conid_owner(entry.conid))
    closed: bool | None = None
    if path is not None:
        try:
            closed = bool(query_worker(path, "close", {"conid": entry.conid}, WORKER_TIMEOUT))
        except WorkerCtlError as exc:
            logger.warning("msrp.session_kill %s: %s", sessid, exc)
    logger.info("msrp.session_kill %s: connection %x closed: %s", sessid, entry.conid, closed)
    return {"killed": killed, "conid": f"{entry.conid:x}", "closed": closed}
