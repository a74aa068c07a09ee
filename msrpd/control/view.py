"""ControlView: what the control methods see of the supervisor (methods.SupervisorView).

Rules: read-only views of the supervisor's state, handed in through the constructor, plus
reload and shutdown as signals to itself, so they take the same path as `msrpd reload` /
`msrpd stop` (the supervisor's SIGHUP and SIGTERM handling).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..rundir import ctl_path
from ..shm import ShmSet
from .methods import WorkerInfo

__all__ = ["ControlView"]


class ControlView:
    """What the control methods see of the supervisor (methods.SupervisorView)."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        shm: ShmSet,
        started: float,
        workers: Callable[[], list[WorkerInfo]],
        agent: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._shm = shm
        self._started = started
        self._workers = workers
        self._agent = agent

    @property
    def settings(self) -> Settings:
        """The settings in force (a reload replaces them)."""
        return self._settings()

    @property
    def started(self) -> float:
        return self._started

    @property
    def shm(self) -> ShmSet:
        return self._shm

    @property
    def supervisor_pid(self) -> int:
        return os.getpid()

    def workers(self) -> list[WorkerInfo]:
        return self._workers()

    @property
    def agent_pid(self) -> int | None:
        """The cluster agent's pid; None without a cluster, or while it respawns."""
        return self._agent()

    def request_reload(self) -> None:
        os.kill(os.getpid(), signal.SIGHUP)  # the usual path: the supervisor's reload

    def request_shutdown(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def worker_ctl_paths(self) -> list[tuple[WorkerInfo, Path]]:
        run_dir = self.settings.core.run_dir
        return [(w, ctl_path(run_dir, w.slot, w.generation)) for w in self.workers()]
