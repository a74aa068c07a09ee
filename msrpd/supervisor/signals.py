"""Signals as a queue: handlers only append the signal and write a byte to a wake-up pipe the
main loop selects on (gunicorn's Arbiter), so nothing runs inside a handler."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from typing import Final

__all__ = ["SIGNALS", "SignalInbox"]

SIGNALS: Final[dict[int, str]] = {
    signal.SIGHUP: "hup",
    signal.SIGTERM: "term",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGUSR1: "usr1",
    signal.SIGCHLD: "chld",
}


class SignalInbox:
    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"!")

    def next(self) -> str | None:
        """The name of the oldest signal not handled yet ("hup", "term", ...), or None."""
        return SIGNALS[self.pending.popleft()] if self.pending else None

    def drain(self) -> None:
        """Empty the wake-up pipe (after select() saw it readable)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)

    def close_in_child(self) -> None:
        """In a forked worker: default handlers again, and no wake-up pipe."""
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        self.close()
