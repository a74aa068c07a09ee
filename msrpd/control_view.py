"""ControlView: what the control methods see of the supervisor (control_methods.SupervisorView).

Rules: read-only views of the supervisor's state, plus reload and shutdown as signals to
itself, so they take the same path as `msrpd reload` / `msrpd stop` (handle_hup, handle_term).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings
from .control_methods import WorkerInfo
from .shm import ShmSet, WorkerState
from .workers.ctl import worker_ctl_path

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["ControlView"]


class ControlView:
    """What the control methods see of the supervisor (control_methods.SupervisorView)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    @property
    def settings(self) -> Settings:
        return self.sup.settings

    @property
    def started(self) -> float:
        return self.sup.started

    @property
    def shm(self) -> ShmSet:
        return self.sup.shm

    @property
    def supervisor_pid(self) -> int:
        return os.getpid()

    def workers(self) -> list[WorkerInfo]:
        infos = []
        procs = sorted(self.sup.workers.values(), key=lambda p: (p.ident.generation, p.ident.slot))
        for proc in procs:
            beat = self.sup.shm.heartbeats.read(proc.ident.index).state
            if proc.retire_by is not None or beat == WorkerState.DRAINING:
                state = "draining"
            else:
                state = "running" if beat == WorkerState.RUNNING else "booting"
            ident = proc.ident
            infos.append(WorkerInfo(proc.pid, ident.slot, ident.generation, ident.index, state))
        return infos

    def request_reload(self) -> None:
        os.kill(os.getpid(), signal.SIGHUP)  # the usual path: handle_hup in the main loop

    def request_shutdown(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    def worker_ctl_paths(self) -> list[tuple[WorkerInfo, Path]]:
        run_dir = self.sup.settings.core.run_dir
        return [(w, worker_ctl_path(run_dir, w.slot, w.generation)) for w in self.workers()]
