"""The supervisor's worker processes: by pid, with the generation they belong to.

Rules: a worker is told things by signal only (style rule 14): SIGUSR2 to retire once the new
generation runs, SIGABRT then SIGKILL on missed heartbeats, SIGTERM then SIGKILL when
retire_timeout passes. A generation is ready once every one of its workers says RUNNING in
its heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from ..control.methods import WorkerInfo
from ..errors import HaltSupervisor
from ..shm import Heartbeats, WorkerState
from ..workers.context import WorkerIdentity

__all__ = ["WorkerProc", "WorkerSet"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerProc:
    pid: int
    ident: WorkerIdentity
    started: float
    retiring: bool = False
    """Of an older generation: told to retire once the new one runs."""
    retire_by: float | None = None
    """Set once a retiring worker is told to retire: when it is stopped if still alive
    (math.inf without a retire_timeout), then when it is killed."""
    retire_stopped: bool = False
    """Sent SIGTERM at retire_by: SIGKILL at the next deadline."""
    misses: int = 0
    """Heartbeat timeouts so far: SIGABRT on the first, SIGKILL on the next."""
    ready: bool = False


class WorkerSet:
    def __init__(self, heartbeats: Heartbeats, process_slots: int) -> None:
        self.heartbeats = heartbeats
        self.process_slots = process_slots
        self.procs: dict[int, WorkerProc] = {}
        self.generation = 0
        """The newest generation: the one that serves new connections once ready."""
        self.ready_generation = 0
        """The newest generation whose workers all ran (readiness was reported)."""

    def free_index(self) -> int:
        """A process slot (heartbeat and stats tables) no live worker uses.

        Raises:
            HaltSupervisor: every slot is taken (too many draining generations).
        """
        used = {p.ident.index for p in self.procs.values()}
        for index in range(self.process_slots):
            if index not in used:
                return index
        raise HaltSupervisor("no free process slot (too many draining generations)", 1)

    def retire_all(self) -> None:
        """Mark every worker as of an older generation (a reload starts the next one)."""
        for proc in self.procs.values():
            proc.retiring = True

    def newly_ready(self) -> bool:
        """True once, when every worker of the newest generation runs."""
        current = [p for p in self.procs.values() if p.ident.generation == self.generation]
        for proc in current:
            if not proc.ready:
                proc.ready = self.heartbeats.read(proc.ident.index).state == WorkerState.RUNNING
        if current and all(p.ready for p in current) and self.ready_generation != self.generation:
            self.ready_generation = self.generation
            return True
        return False

    def tell_retiring(self, deadline: float) -> None:
        """SIGUSR2 to the retiring workers not told yet; stopped if alive at `deadline`."""
        for proc in self.procs.values():
            if proc.retiring and proc.retire_by is None:
                self.signal(proc, signal.SIGUSR2)
                proc.retire_by = deadline

    def check_heartbeats(self, limit: float, drain_timeout: float) -> None:
        now_ns = time.monotonic_ns()
        for proc in self.procs.values():
            if proc.retire_by is not None and time.monotonic() > proc.retire_by:
                self._retire_timeout(proc, drain_timeout)
            beat = self.heartbeats.read(proc.ident.index).beat
            if (now_ns - beat) / 1e9 <= limit:
                continue
            # Two steps: SIGABRT first, SIGKILL on the next miss (style rule 14).
            sig = signal.SIGABRT if proc.misses == 0 else signal.SIGKILL
            logger.error(
                "worker %d (pid %d) missed its heartbeat: %s", proc.ident.slot, proc.pid, sig.name
            )
            self.signal(proc, sig)
            proc.misses += 1

    def _retire_timeout(self, proc: WorkerProc, drain_timeout: float) -> None:
        """retire_timeout passed: stop the worker like `msrpd stop` would (its connections
        finish the frame they are in), and kill it if that takes over drain_timeout."""
        if proc.retire_stopped:
            self.signal(proc, signal.SIGKILL)
            return
        logger.info(
            "worker %d (pid %d): retire_timeout passed, stopping it", proc.ident.slot, proc.pid
        )
        self.signal(proc, signal.SIGTERM)
        proc.retire_stopped = True
        proc.retire_by = time.monotonic() + drain_timeout + 1.0

    def infos(self) -> list[WorkerInfo]:
        """The workers as the control methods show them, oldest generation first."""
        infos = []
        procs = sorted(self.procs.values(), key=lambda p: (p.ident.generation, p.ident.slot))
        for proc in procs:
            beat = self.heartbeats.read(proc.ident.index).state
            if proc.retire_by is not None or beat == WorkerState.DRAINING:
                state = "draining"
            else:
                state = "running" if beat == WorkerState.RUNNING else "booting"
            ident = proc.ident
            infos.append(WorkerInfo(proc.pid, ident.slot, ident.generation, ident.index, state))
        return infos

    @staticmethod
    def signal(proc: WorkerProc, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)

    def kill_all(self, signum: int) -> None:
        for proc in list(self.procs.values()):
            self.signal(proc, signum)
