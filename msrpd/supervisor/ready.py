"""The pipe `msrpd start` waits on while the daemon boots: one line, "ok" once every worker of
the first generation runs, or "error: <reason>", and the pipe closed. Without --foreground
only; in the foreground there is no pipe and notify() does nothing."""

from __future__ import annotations

import contextlib
import os

__all__ = ["ReadyPipe"]


class ReadyPipe:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def notify(self, message: str) -> None:
        """Say `message` (the first call only: the pipe is closed after it)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, message.encode() + b"\n")
            os.close(self.fd)
        self.fd = None

    def close_in_child(self) -> None:
        """In a forked worker: the pipe is the supervisor's to answer."""
        if self.fd is not None:
            os.close(self.fd)
