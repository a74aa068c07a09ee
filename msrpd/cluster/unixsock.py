"""The agent's Unix sockets in run_dir (the workers' failure reports, their token questions)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

__all__ = ["bound"]


def bound(kind: int, path: Path) -> socket.socket:
    """A Unix socket of `kind` bound at `path`, for the node's own processes (0600). A socket
    a dead agent left there is replaced; a file that is not a socket is not touched (bind
    fails)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    return sock
