"""The run directory: every file name one msrpd instance uses there, its lock and clean-up.

Rules:
- Every run-dir path is defined here and nowhere else, and the clean-up globs come from the
  same names, so a file the relay creates is a file a crashed run's clean-up removes.
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
from typing import Final

from .config import Settings
from .errors import HaltSupervisor
from .shm import ShmLayout, instance_prefix, unlink_stale

__all__ = [
    "AGENT_INDEX",
    "EXIT_ALREADY_RUNNING",
    "RunDir",
    "accept_path",
    "agent_ctl_path",
    "agent_report_path",
    "agent_where_path",
    "cmap_lockfile",
    "ctl_path",
    "fifo_path",
    "handoff_path",
    "layout_for",
    "lockfile",
    "log_path",
    "move_lockfile",
    "pidfile",
    "read_pid",
]

EXIT_ALREADY_RUNNING = 4
# Heartbeat/stats slots: 256 children x 4 generations alive at once (a reload while the last
# one still drains). Fixed, so `--children` or a reload never changes the layout ops tools
# attach to; 1024 slots cost about 400 KB.
PROCESS_SLOTS: Final = 1024

# Per-worker sockets: one name pattern each, "<kind>-<slot>-<generation>.sock".
_HANDOFF: Final = "handoff"
_ACCEPT: Final = "accept"
_CTL: Final = "ctl"


def _worker_socket(kind: str, run_dir: Path, slot: int, generation: int) -> Path:
    return run_dir / f"{kind}-{slot}-{generation}.sock"


def handoff_path(run_dir: Path, slot: int, generation: int) -> Path:
    """Worker (slot, generation)'s handoff socket: frames and control between workers."""
    return _worker_socket(_HANDOFF, run_dir, slot, generation)


def accept_path(run_dir: Path, slot: int, generation: int) -> Path:
    """Worker (slot, generation)'s datagram socket for connections passed to it."""
    return _worker_socket(_ACCEPT, run_dir, slot, generation)


def ctl_path(run_dir: Path, slot: int, generation: int) -> Path:
    """Worker (slot, generation)'s control socket (workers/ctl.py)."""
    return _worker_socket(_CTL, run_dir, slot, generation)


AGENT_INDEX: Final = PROCESS_SLOTS - 1
"""The cluster agent's stats slot (workers never take it: supervisor/workerset.py)."""


def agent_ctl_path(run_dir: Path) -> Path:
    """The cluster agent's control socket (cluster/agent.py; the workers' protocol)."""
    return run_dir / "cluster-ctl.sock"


def agent_report_path(run_dir: Path) -> Path:
    """The cluster agent's datagram socket: workers report failed AUTHs on it."""
    return run_dir / "cluster-report.sock"


def agent_where_path(run_dir: Path) -> Path:
    """The cluster agent's seqpacket socket: workers ask it which node holds a token."""
    return run_dir / "cluster-where.sock"


def move_lockfile(run_dir: Path) -> Path:
    """The relay-wide lock one connection move holds (workers/migrate/colocate.py)."""
    return run_dir / "move.lock"


def pidfile(settings: Settings) -> Path:
    return settings.core.run_dir / "msrpd.pid"


def lockfile(settings: Settings) -> Path:
    return settings.core.run_dir / "msrpd.lock"


def cmap_lockfile(settings: Settings) -> Path:
    return settings.core.run_dir / "cmap.lock"


def log_path(settings: Settings) -> Path:
    return settings.log.file or settings.core.run_dir / "msrpd.log"


def fifo_path(settings: Settings) -> Path:
    fifo = settings.control.fifo
    return settings.core.run_dir / "msrpd.fifo" if fifo is None else fifo


def layout_for(settings: Settings) -> ShmLayout:
    """The shared-memory regions of the instance `settings` describe (the supervisor creates
    them; workers and ops tools attach with the same numbers)."""
    m = settings.msrp
    return ShmLayout(
        prefix=instance_prefix(settings.core.run_dir),
        lockfile=cmap_lockfile(settings),
        cmap_stripes=1 << m.cmap_size,
        cmap_capacity=m.cmap_max_entries,
        registry_capacity=max(1024, m.cmap_max_entries),
        process_slots=PROCESS_SLOTS,
        # Every client connection's source address may be counted; a user holds one session
        # or more, so fewer users than sessions.
        addrs_capacity=max(1024, m.cmap_max_entries),
        users_capacity=max(1024, m.cmap_max_entries // 8),
    )


def read_pid(settings: Settings) -> int | None:
    """The pid in the pidfile, or None when there is none or it is unreadable."""
    try:
        return int(pidfile(settings).read_text().strip())
    except (OSError, ValueError):
        return None


class RunDir:
    """The run_dir of the settings a supervisor started with: a reload cannot change it."""

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
            fd = os.open(lockfile(self.settings), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        sockets = (self.path.glob(f"{kind}-*.sock") for kind in (_HANDOFF, _CTL, _ACCEPT))
        return [pidfile(self.settings), fifo_path(self.settings), *(p for g in sockets for p in g)]

    def write_pid(self, pid: int) -> None:
        path = pidfile(self.settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        os.replace(tmp, path)

    def release(self) -> None:
        """Remove the pidfile, fifo and sockets, and drop the lock (the lock file stays: it
        is only a name to lock on)."""
        self._clean()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
