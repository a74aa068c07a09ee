"""Supervisor: set-up and tear-down, the main loop, and what each signal does (the package
docstring, msrpd/supervisor/__init__.py, has the strategy)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time

from .. import __version__, hot_build
from ..config import Settings
from ..control.fifo import ControlServer
from ..control.methods import build_methods
from ..control.metrics import MetricsServer, ShmCollector
from ..control.rpc import dispatcher
from ..control.view import ControlView
from ..errors import ConfigError, HaltSupervisor
from ..process.listeners import ListenerSet, listen_backlog
from ..process.logs import reopen_logs
from ..process.title import set_title
from ..routing import RouteLoadError, describe_route
from ..rundir import AGENT_INDEX, RunDir, fifo_path, layout_for
from ..shm import ShmLayout, ShmSet
from ..workers.context import WorkerIdentity
from .agentproc import AgentProc
from .ready import ReadyPipe
from .reaper import Reaper
from .reload import reload_settings
from .services import Services
from .signals import SignalInbox
from .spawner import Spawner
from .sweeper import Sweeper
from .workerset import WorkerProc, WorkerSet

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

FAST_STOP_TIMEOUT = 2.0


class Supervisor:
    def __init__(self, settings: Settings, children: int | None = None) -> None:
        self.settings = settings
        self.children_override = children
        self.rundir = RunDir(settings)
        self.listeners = ListenerSet()
        self.stopping_until: float | None = None
        self.ready = ReadyPipe(None)

    # -- lifetime ---------------------------------------------------------------------------

    def run(self, ready_fd: int | None = None) -> int:
        """Serve until stopped; returns the exit status."""
        self.ready = ReadyPipe(ready_fd)
        started = time.time()
        set_title("supervisor")
        try:
            cleaned = self.rundir.acquire()
        except HaltSupervisor as exc:
            logger.error("%s", exc.reason)
            self.ready.notify(f"error: {exc.reason}")
            return exc.exit_status
        if cleaned:
            logger.warning("removed what a crashed run left: %s", ", ".join(cleaned))
        route = describe_route(self.settings.msrp.route)
        logger.info("msrpd %s starting: hot path %s, route %s", __version__, hot_build(), route)
        layout = layout_for(self.settings)
        try:
            self.shm: ShmSet = layout.create_all()
        except OSError as exc:  # ENOSPC: the tables do not fit in /dev/shm
            reason = f"shared memory: cannot create the tables in /dev/shm: {exc}"
            logger.error("%s", reason)
            self.ready.notify(f"error: {reason}")
            self.rundir.release()
            return 3
        return self._serve(layout, started)

    def _serve(self, layout: ShmLayout, started: float) -> int:
        """Run the workers over the tables of `layout` until stopped; the exit status."""
        self.workers = WorkerSet(self.shm.heartbeats, AGENT_INDEX)  # the last slot: the agent's
        self.reaper = Reaper(self.shm)
        self.sweeper = Sweeper(self.shm)
        self.spawner = Spawner(layout, self.shm.heartbeats, self.listeners, self._in_child)
        self.agent = AgentProc(layout, self.shm.stats, self._in_child, self.settings)
        self.services: Services | None = None
        failure, status = "", 0
        try:
            self.rundir.write_pid(os.getpid())
            self.services = self._services(started)
            core = self.settings.core
            self.listeners.ensure(core.listen, core.children, listen_backlog(core.backlog))
            self.services.inbox.install()
            self._spawn_generation()
            self.agent.start()
            self._loop()
        except (HaltSupervisor, OSError) as exc:
            halt = exc if isinstance(exc, HaltSupervisor) else HaltSupervisor(str(exc), 3)
            failure = halt.reason
            logger.error("%s", failure)
            self.workers.kill_all(signal.SIGKILL)
            self.agent.kill(signal.SIGKILL)
            self._reap_all(5.0)
            status = halt.exit_status
        finally:
            if self.services is not None:
                self.services.close()
                self.services.inbox.close()
            self.listeners.close()
            self.shm.close()
            self.shm.unlink()
            self.rundir.release()
        # Only now, with nothing left behind, may `msrpd start` return.
        self.ready.notify(f"error: {failure}" if failure else "stopped before ready")
        logger.info("msrpd stopped")
        return status

    def _services(self, started: float) -> Services:
        view = ControlView(
            lambda: self.settings, self.shm, started, self.workers.infos, lambda: self.agent.pid
        )
        control = ControlServer(fifo_path(self.settings), dispatcher(build_methods(view)))
        control.open()
        metrics = None
        if self.settings.metrics.listen:
            try:
                metrics = MetricsServer(
                    self.settings.metrics.listen,
                    ShmCollector(self.shm, started, self._cluster_on),
                )
            except BaseException:
                control.close()
                raise
        return Services(SignalInbox(), control, metrics)

    def _cluster_on(self) -> bool:
        return self.settings.cluster.redis is not None

    def _in_child(self) -> None:
        """In a forked worker: close what the supervisor holds open."""
        if self.services is not None:
            self.services.inbox.close_in_child()
            self.services.close_in_child()
        self.ready.close_in_child()

    def _loop(self) -> None:
        assert self.services is not None
        services, workers = self.services, self.workers
        while True:
            # Poll fast while a generation boots, so readiness is reported without delay.
            booting = workers.ready_generation != workers.generation
            services.wait(0.05 if booting else 1.0)
            while (name := services.inbox.next()) is not None:
                getattr(self, f"handle_{name}")()
            self.reap()
            if self.stopping_until is not None:
                if not (workers.procs or self.agent.running):
                    return
                if time.monotonic() >= self.stopping_until:
                    logger.warning("workers still running after the deadline: SIGKILL")
                    workers.kill_all(signal.SIGKILL)
                    self.agent.kill(signal.SIGKILL)
                    self.stopping_until = time.monotonic() + 5.0
                continue
            core = self.settings.core
            workers.check_heartbeats(core.heartbeat_timeout, core.drain_timeout)
            self.maintain()
            self.sweeper.sweep(self.settings.msrp.timer_interval)

    # -- signals ----------------------------------------------------------------------------

    def handle_chld(self) -> None:
        pass  # reap() runs after every dispatch

    def handle_term(self) -> None:
        self._stop(signal.SIGTERM, self.settings.core.drain_timeout + 1.0, "graceful stop")

    def handle_int(self) -> None:
        if self.stopping_until is not None:
            # A second INT/QUIT means now (uvicorn force_exit).
            self.workers.kill_all(signal.SIGKILL)
            self.agent.kill(signal.SIGKILL)
            return
        self._stop(signal.SIGQUIT, FAST_STOP_TIMEOUT, "fast stop")

    handle_quit = handle_int

    def handle_usr1(self) -> None:
        reopen_logs()
        self.workers.kill_all(signal.SIGUSR1)
        self.agent.kill(signal.SIGUSR1)

    def handle_hup(self) -> None:
        logger.info("reload: reading the configuration again")
        try:
            new = reload_settings(self.settings, self.children_override)
            backlog = listen_backlog(new.core.backlog)
            self.listeners.ensure(new.core.listen, new.core.children, backlog)
        except (ConfigError, RouteLoadError, OSError) as exc:
            logger.error("reload refused, still serving the old configuration:\n%s", exc)
            return
        self.settings = new
        logging.getLogger().setLevel(new.core.log_level.upper())
        self.workers.retire_all()
        self._spawn_generation()
        self.agent.restart(new)

    def _stop(self, signum: int, timeout: float, what: str) -> None:
        logger.info("%s: stopping %d workers", what, len(self.workers.procs))
        self.stopping_until = time.monotonic() + timeout
        self.workers.kill_all(signum)
        self.agent.kill(signal.SIGTERM)  # the node leaves the cluster (cluster/agent.py)

    # -- workers ----------------------------------------------------------------------------

    def _spawn_generation(self) -> None:
        self.workers.generation += 1
        self.reaper.new_generation(self.workers.generation)
        for slot in range(self.settings.core.children):
            self.spawn(slot)
        self.listeners.prune(self.settings.core.listen, self.settings.core.children)

    def spawn(self, slot: int) -> None:
        generation = self.workers.generation
        first = self.reaper.first_serial(slot, generation)
        ident = WorkerIdentity(slot, generation, self.workers.free_index(), first)
        pid = self.spawner.spawn(self.settings, ident)
        self.workers.procs[pid] = WorkerProc(pid, ident, time.monotonic())
        logger.info("worker %d (generation %d) started, pid %d", slot, generation, pid)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.agent.reaped(pid, status, stopping=self.stopping_until is not None):
                continue
            proc = self.workers.procs.pop(pid, None)
            if proc is not None:
                stopping = self.stopping_until is not None
                generation = self.workers.generation
                self.reaper.reaped(proc, status, stopping=stopping, generation=generation)

    def maintain(self) -> None:
        for slot in self.reaper.due():
            self.spawn(slot)
        self.agent.maintain()
        if self.workers.newly_ready():
            self._generation_ready()

    def _generation_ready(self) -> None:
        # A retiring worker exits by itself once its connections have moved; only what
        # cannot move (TLS) keeps it, until it closes or retire_timeout passes.
        timeout = self.settings.core.retire_timeout
        self.workers.tell_retiring(time.monotonic() + timeout if timeout else math.inf)
        listen = ", ".join(str(a) for a in self.settings.core.listen)
        logger.info(
            "msrpd ready: generation %d, %d workers on %s",
            self.workers.generation,
            self.settings.core.children,
            listen,
        )
        self.ready.notify("ok")

    # -- helpers ----------------------------------------------------------------------------

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (self.workers.procs or self.agent.running) and time.monotonic() < deadline:
            with contextlib.suppress(HaltSupervisor):
                self.reap()
            time.sleep(0.05)
