"""A worker's side of the cluster agent: each failed AUTH's source address, as one datagram on
run_dir/cluster-report.sock (the agent counts it in Redis, cluster/bans.py).

Rules: never blocks and never raises on the worker's loop. When the agent is not there
(restarting, or its socket's queue full) the report is lost for the cluster only: the failure
still counts on this node (shm/addrs.py), so a local ban holds as before; the loss is logged
at debug level, once per report.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

__all__ = ["FailureReport"]

logger = logging.getLogger(__name__)


class FailureReport:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def auth_failed(self, addr: str) -> None:
        """Tell the agent: an AUTH from `addr` failed."""
        try:
            self.sock.sendto(addr.encode("utf-8", "surrogateescape"), self.path)
        except OSError as exc:
            logger.debug("failed AUTH from %s not reported to the cluster agent: %s", addr, exc)

    def close(self) -> None:
        self.sock.close()
