"""Logging set-up for the supervisor and its workers.

Rules: one format for every process, with the pid, so the lines of N workers sharing one
stderr or file can be told apart; USR1 reopens a log file (logrotate's copy-less rotation).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

__all__ = ["reopen_logs", "setup_logging"]

FORMAT = "%(asctime)s msrpd[%(process)d] %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, file: Path | None = None) -> None:
    """Send every record at `level` and above to `file`, or to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    new: logging.Handler
    if file is None:
        new = logging.StreamHandler(sys.stderr)
    else:
        new = logging.FileHandler(file, encoding="utf-8")
    new.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(new)
    root.setLevel(level.upper())


def reopen_logs() -> None:
    """Close and reopen file handlers (SIGUSR1); stream handlers are left alone."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
