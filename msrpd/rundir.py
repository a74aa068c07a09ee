"""The run directory: one msrpd instance's pidfile, lock, fifo, handoff sockets and log.

Rules:
- Liveness is an flock on msrpd.lock held by the supervisor for its whole life: the kernel
  drops it when the process dies, however it dies, so a stale pidfile can never pass for a
  live instance (gunicorn's pidfile check with os.kill(pid, 0) can be fooled by pid reuse).
- A start that gets the lock removes what a crashed run left: pidfile, fifo, handoff, ctl and
  accept sockets, and shared-memory segments of this run_dir's prefix.
- The pidfile is written atomically (write to a temporary name, then rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .config import Settings
from .errors import HaltSupervisor
from .shm import instance_prefix, unlink_stale

__all__ = ["RunDir", "read_pid"]

EXIT_ALREADY_RUNNING = 4


def read_pid(settings: Settings) -> int | None:
    """The pid in the pidfile, or None when there is none or it is unreadable."""
    try:
        return int(settings.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


class RunDir:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.core.run_dir
        self.prefix = instance_prefix(self.path)
        self._lock_fd: int | None = None

    def acquire(self) -> list[str]:
        """Lock the run_dir and clean a crashed run's leftovers (returned, for the log).

        Raises:
            HaltSupervisor: a live msrpd holds the run_dir, or it cannot be created.
        """
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.settings.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise HaltSupervisor(f"run_dir {self.path}: {exc.strerror}", 2) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_pid(self.settings)
            raise HaltSupervisor(
                f"msrpd is already running (pid {pid}) with run_dir {self.path}",
                EXIT_ALREADY_RUNNING,
            ) from None
        self._lock_fd = fd
        return self._clean()

    def _clean(self) -> list[str]:
        stale = [str(p) for p in self._files() if p.exists() or p.is_symlink()]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        return stale + [f"/dev/shm/{name}" for name in unlink_stale(self.prefix + "-")]

    def _files(self) -> list[Path]:
        s = self.settings
        return [
            s.pidfile,
            s.fifo_path,
            *self.path.glob("handoff-*.sock"),
            *self.path.glob("ctl-*.sock"),
            *self.path.glob("accept-*.sock"),
        ]

    def write_pid(self, pid: int) -> None:
        tmp = self.settings.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, self.settings.pidfile)

    def release(self) -> None:
        """Remove the pidfile, fifo and sockets, and drop the lock (the lock file stays: it
        is only a name to lock on)."""
        self._clean()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
