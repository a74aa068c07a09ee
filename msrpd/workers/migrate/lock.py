"""The relay-wide move lock: one move at a time in the whole relay (colocate.py), or one
retiring batch (retire.py), held from the sockets' sending to the last RELEASE.

Why: two ends of a pair moving at once could let a frame pass an earlier one (handover.py).
An flock, so a worker that dies holding it lets go.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from ...rundir import move_lockfile

__all__ = ["MoveLock"]


class MoveLock:
    """The lock, and this worker's moves out under it (the lock is held while any is out)."""

    def __init__(self, run_dir: Path) -> None:
        path = move_lockfile(run_dir)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.out = 0
        """Moves this worker sent that are not over yet."""
        self._when_free: list[Callable[[], None]] = []

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another worker holds it."""
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # another worker is moving one
        return True

    def release(self) -> None:
        """Give the lock back (only when no move sent under it is unfinished)."""
        fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def started(self) -> None:
        """One more move went out under the lock."""
        self.out += 1

    def finished(self) -> None:
        """One move out is over (released or failed); after the last, the lock goes back
        and whoever waits for that is called."""
        self.out -= 1
        if self.out <= 0:
            self.out = 0
            self.release()
            waiters, self._when_free = self._when_free, []
            for callback in waiters:
                callback()

    def when_free(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the moves out now unfinished are over (once)."""
        if callback not in self._when_free:
            self._when_free.append(callback)

    def close(self) -> None:
        os.close(self._fd)
