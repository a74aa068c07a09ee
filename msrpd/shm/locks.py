"""Striped, crash-safe locks: one fcntl byte-range lock per stripe on one lock file.

Strategy: stripe i is byte i of the lock file, locked with F_SETLKW (fcntl.lockf). The kernel
drops every record lock of a process when it dies, so a worker SIGKILLed inside a critical
section never blocks the others (style rule 16; nginx's fd-lock fallback for ngx_shmtx_t). A
multiprocessing.Lock held by a dead process would stay locked forever.

Rules (POSIX record locks are odd, and each rule below is load-bearing):
- Locks belong to the *process*, not to the file descriptor: two threads of one process do not
  exclude each other, and locking a byte twice is not counted. So stripe i is also guarded by
  threading.Lock number i % 256, taken first (256 of them, not 65,536: memory per process).
  A thread holds one stripe at a time; a nested acquire may deadlock instead of passing.
- A process loses ALL its locks on the file as soon as it closes ANY descriptor of that file.
  Keep exactly one StripeLocks (one fd) per lock file per process; never open the path again.
- Locks are not inherited across fork(). Call open() in the process that uses it (after fork);
  an object inherited from a parent must not be used in the child.
- Linux detects deadlock among F_SETLKW waiters (EDEADLK); holding one stripe at a time, as
  every table operation does, never builds a cycle.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = ["MAX_STRIPES_LOG2", "StripeLocks", "check_stripes"]

MAX_STRIPES_LOG2: Final = 16
_THREAD_LOCKS: Final = 256


def check_stripes(n_stripes: int) -> int:
    """Return k for n_stripes == 1 << k, k in 0..16; raise ValueError otherwise."""
    k = n_stripes.bit_length() - 1
    if n_stripes < 1 or n_stripes != 1 << k or k > MAX_STRIPES_LOG2:
        raise ValueError(f"n_stripes must be 1 << k with k in 0..16, got {n_stripes}")
    return k


class StripeLocks:
    """n_stripes exclusive locks, safe against a holder that dies."""

    __slots__ = ("_fd", "_local", "_local_mask", "n_stripes", "path")

    def __init__(self, path: Path, fd: int, n_stripes: int) -> None:
        # Use open(); this only wraps a descriptor.
        self.path = path
        self.n_stripes = n_stripes
        self._fd = fd
        self._local = [threading.Lock() for _ in range(min(n_stripes, _THREAD_LOCKS))]
        self._local_mask = len(self._local) - 1

    @classmethod
    def open(cls, path: str | os.PathLike[str], n_stripes: int) -> StripeLocks:
        """Open (creating if needed) the lock file; one call per process, after fork.

        Raises:
            ValueError: n_stripes is not a power of two in 1..65536.
        """
        check_stripes(n_stripes)
        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return cls(path, fd, n_stripes)

    def lock(self, i: int) -> None:
        """Block until stripe i is held by this thread."""
        if not 0 <= i < self.n_stripes:
            raise IndexError(f"stripe {i} outside 0..{self.n_stripes - 1}")
        local = self._local[i & self._local_mask]
        local.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, i, os.SEEK_SET)
        except BaseException:
            local.release()
            raise

    def unlock(self, i: int) -> None:
        """Release stripe i, which this thread holds."""
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, i, os.SEEK_SET)
        finally:
            self._local[i & self._local_mask].release()

    @contextmanager
    def held(self, i: int) -> Iterator[None]:
        """`with locks.held(i):` holds stripe i for the block."""
        self.lock(i)
        try:
            yield
        finally:
            self.unlock(i)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the descriptor, which drops every lock this process holds on the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
