"""Logging set-up for the supervisor and its workers: stderr, a file or syslog; text or JSON.

Rules: one format for every process, with the pid, so the lines of N workers sharing one
stderr or file can be told apart; USR1 reopens a log file (logrotate's copy-less rotation).
Records may carry structured fields in `extra={"fields": {...}}` (the accounting line does):
JSON lines include them as keys, text lines already say them in the message.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path

from ..config import LogSettings

__all__ = ["JsonFormatter", "reopen_logs", "setup_logging"]

FORMAT = "%(asctime)s msrpd[%(process)d] %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "msrpd[%(process)d]: %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, pid, logger, message, and any `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _handler(log: LogSettings, file: Path | None) -> logging.Handler:
    if log.target == "syslog":
        handler: logging.Handler = logging.handlers.SysLogHandler(
            "/dev/log", logging.handlers.SysLogHandler.LOG_DAEMON
        )
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    elif log.target == "file" or file is not None:
        handler = logging.FileHandler(file or log.file or "msrpd.log", encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if log.json:
        handler.setFormatter(JsonFormatter())
    elif handler.formatter is None:
        handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def setup_logging(level: str, log: LogSettings | None = None, file: Path | None = None) -> None:
    """Send every record at `level` and above where `log` says; `file` overrides the target
    with a file (the daemon's stderr log)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_handler(log or LogSettings(), file))
    root.setLevel(level.upper())


def reopen_logs() -> None:
    """Close and reopen file handlers (SIGUSR1); stream and syslog handlers are left alone."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
