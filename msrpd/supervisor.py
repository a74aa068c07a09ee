"""The supervisor: sockets, shared memory, workers, signals, reload and stop.

Strategy (gunicorn's Arbiter, nginx's master cycle; style rules 9-14):
- Signal handlers only append to a deque and write a byte to a wake-up pipe; the main loop
  sleeps in select() on that pipe for at most a second, then dispatches `handle_<name>` and
  runs reap(), check_heartbeats(), maintain() and the cmap sweep.
- Worker slot i always accepts on the supervisor's socket(s) for slot i; a replacement or a
  next-generation worker takes the same socket, so no connection is refused while it starts.
- Reload builds the new config and loads the new routing script before touching anything; if
  either fails, the old generation keeps serving. Otherwise a new generation starts on the
  same sockets, and once all of it runs, the old generation is told to retire (SIGUSR2): it
  stops accepting, hands its plain TCP connections with their sessions to the new generation
  (workers/migrate/retire.py) and serves what cannot move (TLS) until it closes. Only if
  retire_timeout (the new configuration's) is set and passes is it stopped: SIGTERM, then
  SIGKILL after drain_timeout.
- A worker that exits with WORKER_BOOT_ERROR halts the supervisor (no fork loop). Other deaths
  are respawned at once, or after a backoff when the slot keeps dying young.
- A reaped worker's sessions and registry entries are purged at once, before anything could
  respawn its slot: its connections died with it. Its successor keeps its (slot, generation),
  so routing by owner keeps working, and starts its connection ids above every one the dead
  worker may have used (workers/conids.py): a stale id never reaches a stranger (issue 12).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import time
from collections import deque
from dataclasses import dataclass, replace

from .config import Settings, load_config
from .control import ControlServer, dispatcher
from .control_methods import build_methods
from .control_view import ControlView
from .errors import ConfigError, HaltSupervisor
from .listeners import ListenerSet, listen_backlog
from .logs import reopen_logs
from .metrics import MetricsServer, ShmCollector
from .proctitle import set_title
from .routing import RouteLoadError, load_route
from .rundir import RunDir
from .shm import ShmLayout, ShmSet, WorkerState, instance_prefix
from .workers.conids import FIRST_SERIAL
from .workers.context import WorkerIdentity
from .workers.handoff import owner_conids
from .workers.worker import WORKER_BOOT_ERROR, Worker, WorkerSpec

__all__ = ["EXIT_BOOT_ERROR", "Supervisor", "layout_for"]

logger = logging.getLogger(__name__)

EXIT_BOOT_ERROR = 3
SIGNALS: dict[int, str] = {
    signal.SIGHUP: "hup",
    signal.SIGTERM: "term",
    signal.SIGINT: "int",
    signal.SIGQUIT: "quit",
    signal.SIGUSR1: "usr1",
    signal.SIGCHLD: "chld",
}
FAST_STOP_TIMEOUT = 2.0
# Heartbeat/stats slots: 256 children x 4 generations alive at once (a reload while the last
# one still drains). Fixed, so `--children` or a reload never changes the layout ops tools
# attach to; 1024 slots cost about 400 KB.
PROCESS_SLOTS = 1024
YOUNG = 2.0  # a worker that dies younger than this slows its slot's respawns down
MAX_BACKOFF = 8.0


def layout_for(settings: Settings) -> ShmLayout:
    """The shared-memory regions of the instance `settings` describe (the supervisor creates
    them; workers and ops tools attach with the same numbers)."""
    m = settings.msrp
    return ShmLayout(
        prefix=instance_prefix(settings.core.run_dir),
        lockfile=settings.lockfile.with_name("cmap.lock"),
        cmap_stripes=1 << m.cmap_size,
        cmap_capacity=m.cmap_max_entries,
        registry_capacity=max(1024, m.cmap_max_entries),
        process_slots=PROCESS_SLOTS,
    )


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


class Supervisor:
    def __init__(self, settings: Settings, children: int | None = None) -> None:
        self.settings = settings
        self.children_override = children
        self.rundir = RunDir(settings)
        self.listeners = ListenerSet()
        self.workers: dict[int, WorkerProc] = {}
        self.generation = 0
        self.signals: deque[int] = deque()
        self.stopping_until: float | None = None
        self.backoff: dict[int, float] = {}
        self.respawn_at: dict[int, float] = {}
        self.serials: dict[tuple[int, int], int] = {}
        """(slot, generation) -> the first connection-id serial its next worker may use."""
        self.next_sweep = 0.0
        self.nonce_secret = os.urandom(32)
        self.started = time.time()
        self.ready_fd: int | None = None
        self.ready_generation = 0
        self.exit_status = 0
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None

    # -- lifetime ---------------------------------------------------------------------------

    def run(self, ready_fd: int | None = None) -> int:
        """Serve until stopped; returns the exit status."""
        self.ready_fd = ready_fd
        set_title("supervisor")
        try:
            cleaned = self.rundir.acquire()
        except HaltSupervisor as exc:
            logger.error("%s", exc.reason)
            self._notify_ready(f"error: {exc.reason}")
            return exc.exit_status
        if cleaned:
            logger.warning("removed what a crashed run left: %s", ", ".join(cleaned))
        self.layout = self._layout(self.settings)
        try:
            self.shm: ShmSet = self.layout.create_all()
        except OSError as exc:  # ENOSPC: the tables do not fit in /dev/shm
            reason = f"shared memory: cannot create the tables in /dev/shm: {exc}"
            logger.error("%s", reason)
            self._notify_ready(f"error: {reason}")
            self.rundir.release()
            return 3
        failure = ""
        try:
            self.rundir.write_pid(os.getpid())
            self.control = ControlServer(
                self.settings.fifo_path, dispatcher(build_methods(ControlView(self)))
            )
            self.control.open()
            if self.settings.metrics.listen:
                collector = ShmCollector(self.shm, self.started)
                self.metrics = MetricsServer(self.settings.metrics.listen, collector)
            core = self.settings.core
            self.listeners.ensure(core.listen, core.children, listen_backlog(core.backlog))
            self._install_signals()
            self._spawn_generation()
            self._loop()
        except (HaltSupervisor, OSError) as exc:
            halt = exc if isinstance(exc, HaltSupervisor) else HaltSupervisor(str(exc), 3)
            failure = halt.reason
            logger.error("%s", failure)
            self._kill_all(signal.SIGKILL)
            self._reap_all(5.0)
            self.exit_status = halt.exit_status
        finally:
            if self.control is not None:
                self.control.close()
            if self.metrics is not None:
                self.metrics.close()
            self.listeners.close()
            self.shm.close()
            self.shm.unlink()
            self.rundir.release()
        # Only now, with nothing left behind, may `msrpd start` return.
        self._notify_ready(f"error: {failure}" if failure else "stopped before ready")
        logger.info("msrpd stopped")
        return self.exit_status

    def _layout(self, settings: Settings) -> ShmLayout:
        return layout_for(settings)

    def _loop(self) -> None:
        while True:
            # Poll fast while a generation boots, so readiness is reported without delay.
            self._wait(1.0 if self.ready_generation == self.generation else 0.05)
            while self.signals:
                name = SIGNALS[self.signals.popleft()]
                getattr(self, f"handle_{name}")()
            self.reap()
            if self.stopping_until is not None:
                if not self.workers:
                    return
                if time.monotonic() >= self.stopping_until:
                    logger.warning("workers still running after the deadline: SIGKILL")
                    self._kill_all(signal.SIGKILL)
                    self.stopping_until = time.monotonic() + 5.0
                continue
            self.check_heartbeats()
            self.maintain()
            self.sweep()

    # -- signals ----------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"!")

    def _wait(self, timeout: float) -> None:
        if self.signals:
            return
        control, metrics = self.control, self.metrics
        readers = [self.wake_r] if control is None else [self.wake_r, control.fileno()]
        if metrics is not None:
            readers.append(metrics.fileno())
        writers = [] if control is None else control.write_fds()
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(readers, writers, [], timeout)
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            if control is not None and control.fileno() in ready:
                control.on_readable()
            if metrics is not None and metrics.fileno() in ready:
                metrics.on_readable()
        if control is not None and control.wants_write():
            control.on_writable()

    def handle_chld(self) -> None:
        pass  # reap() runs after every dispatch

    def handle_term(self) -> None:
        self._stop(signal.SIGTERM, self.settings.core.drain_timeout + 1.0, "graceful stop")

    def handle_int(self) -> None:
        if self.stopping_until is not None:
            self._kill_all(signal.SIGKILL)  # a second INT/QUIT means now (uvicorn force_exit)
            return
        self._stop(signal.SIGQUIT, FAST_STOP_TIMEOUT, "fast stop")

    handle_quit = handle_int

    def handle_usr1(self) -> None:
        reopen_logs()
        self._kill_all(signal.SIGUSR1)

    def handle_hup(self) -> None:
        logger.info("reload: reading the configuration again")
        try:
            new = self._reload_settings()
            backlog = listen_backlog(new.core.backlog)
            self.listeners.ensure(new.core.listen, new.core.children, backlog)
        except (ConfigError, RouteLoadError, OSError) as exc:
            logger.error("reload refused, still serving the old configuration:\n%s", exc)
            return
        self.settings = new
        self.rundir.settings = new
        logging.getLogger().setLevel(new.core.log_level.upper())
        for proc in self.workers.values():
            proc.retiring = True
        self._spawn_generation()

    def _reload_settings(self) -> Settings:
        old = self.settings
        new = load_config(old.source, children=self.children_override)
        load_route(new.msrp.route, new.msrp.event_callback)
        # Shared memory and the run_dir live as long as the supervisor: changing them takes a
        # restart (etc/msrpd.toml says so for each key).
        size, entries = old.msrp.cmap_size, old.msrp.cmap_max_entries
        if (new.msrp.cmap_size, new.msrp.cmap_max_entries) != (size, entries):
            logger.warning("reload: cmap_size and cmap_max_entries need a restart; kept")
        if new.core.run_dir != old.core.run_dir:
            logger.warning("reload: run_dir needs a restart; kept %s", old.core.run_dir)
        msrp = replace(new.msrp, cmap_size=size, cmap_max_entries=entries)
        return replace(new, core=replace(new.core, run_dir=old.core.run_dir), msrp=msrp)

    def _stop(self, signum: int, timeout: float, what: str) -> None:
        logger.info("%s: stopping %d workers", what, len(self.workers))
        self.stopping_until = time.monotonic() + timeout
        self._kill_all(signum)

    # -- workers ----------------------------------------------------------------------------

    def _spawn_generation(self) -> None:
        self.generation += 1
        self.serials = {k: v for k, v in self.serials.items() if k[1] == self.generation}
        # Every slot starts now: a respawn still waiting out its backoff would start a second
        # worker of the same (slot, generation), handing out the same connection ids.
        self.respawn_at.clear()
        for slot in range(self.settings.core.children):
            self.spawn(slot)
        self.listeners.prune(self.settings.core.listen, self.settings.core.children)

    def spawn(self, slot: int) -> None:
        index = self._free_index()
        first = self.serials.get((slot, self.generation), FIRST_SERIAL)
        ident = WorkerIdentity(slot, self.generation, index, first)
        spec = WorkerSpec(
            settings=self.settings,
            ident=ident,
            sockets=self.listeners.for_slot(self.settings.core.listen, slot),
            layout=self.layout,
            nonce_secret=self.nonce_secret,
            supervisor_pid=os.getpid(),
        )
        worker = Worker(spec)
        self.shm.heartbeats.claim(index, 0, slot, self.generation)
        self.shm.heartbeats.reserve_serials(index, first)  # the child's from now on
        pid = os.fork()
        if pid == 0:
            self._child(worker)
        self.shm.heartbeats.claim(index, pid, slot, self.generation)
        self.workers[pid] = WorkerProc(pid, ident, time.monotonic())
        logger.info("worker %d (generation %d) started, pid %d", slot, self.generation, pid)

    def _child(self, worker: Worker) -> None:
        status = 1
        try:
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            os.close(self.wake_r)
            os.close(self.wake_w)
            if self.control is not None:
                self.control.close_in_child()
            if self.metrics is not None:
                self.metrics.close()
            if self.ready_fd is not None:
                os.close(self.ready_fd)
            status = worker.run()
        except BaseException:
            logger.exception("worker crashed")
        finally:
            logging.shutdown()
            os._exit(status)

    def _free_index(self) -> int:
        used = {p.ident.index for p in self.workers.values()}
        for index in range(self.layout.process_slots):
            if index not in used:
                return index
        raise HaltSupervisor("no free process slot (too many draining generations)", 1)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.workers.pop(pid, None)
            if proc is not None:
                self._reaped(proc, status)

    def _reaped(self, proc: WorkerProc, status: int) -> None:
        slot, gen = proc.ident.slot, proc.ident.generation
        mark = self.shm.heartbeats.serial_mark(proc.ident.index)
        self.serials[slot, gen] = max(self.serials.get((slot, gen), FIRST_SERIAL), mark)
        self.shm.heartbeats.release(proc.ident.index)
        self.shm.stats.retire(proc.ident.index)
        code = os.waitstatus_to_exitcode(status)
        # At stop the tables go away with the supervisor: only a worker that died (not one
        # that finished) is purged then, for the sake of those still draining.
        if self.stopping_until is None or code != 0:
            self._purge(slot, gen)
        if code == WORKER_BOOT_ERROR:
            raise HaltSupervisor(
                f"worker {slot} failed to boot (see the log above)", EXIT_BOOT_ERROR
            )
        if self.stopping_until is not None or proc.retiring or gen != self.generation:
            logger.info("worker %d (generation %d, pid %d) exited: %d", slot, gen, proc.pid, code)
            return
        logger.error("worker %d (pid %d) died (%d); respawning", slot, proc.pid, code)
        young = time.monotonic() - proc.started < YOUNG
        delay = min(self.backoff.get(slot, 0.0) * 2 or 0.25, MAX_BACKOFF) if young else 0.0
        self.backoff[slot] = delay
        self.respawn_at[slot] = time.monotonic() + delay

    def _purge(self, slot: int, generation: int) -> None:
        """Remove the sessions and registry entries of worker (slot, generation)'s
        connections: they died with it. A SEND to one of its sessions gets 481 now (RFC 4976
        §6.3, rfc-checklist case 21c), and a next hop it was connected to is dialled again."""
        conids = owner_conids(slot, generation)
        sessions = self.shm.cmap.purge(conids)
        entries = self.shm.registry.purge(conids)
        if sessions or entries:
            logger.warning(
                "worker %d (generation %d) left %d sessions and %d connections: removed",
                slot,
                generation,
                sessions,
                entries,
            )

    def maintain(self) -> None:
        now = time.monotonic()
        for slot, when in list(self.respawn_at.items()):
            if now >= when:
                del self.respawn_at[slot]
                self.spawn(slot)
        current = [p for p in self.workers.values() if p.ident.generation == self.generation]
        for proc in current:
            if (
                not proc.ready
                and self.shm.heartbeats.read(proc.ident.index).state == WorkerState.RUNNING
            ):
                proc.ready = True
        if current and all(p.ready for p in current) and self.ready_generation != self.generation:
            self.ready_generation = self.generation
            self._generation_ready()

    def _generation_ready(self) -> None:
        # A retiring worker exits by itself once its connections have moved; only what
        # cannot move (TLS) keeps it, until it closes or retire_timeout passes.
        timeout = self.settings.core.retire_timeout
        deadline = time.monotonic() + timeout if timeout else math.inf
        for proc in self.workers.values():
            if proc.retiring and proc.retire_by is None:
                self._signal(proc, signal.SIGUSR2)
                proc.retire_by = deadline
        listen = ", ".join(str(a) for a in self.settings.core.listen)
        logger.info(
            "msrpd ready: generation %d, %d workers on %s",
            self.generation,
            self.settings.core.children,
            listen,
        )
        self._notify_ready("ok")

    def check_heartbeats(self) -> None:
        now_ns = time.monotonic_ns()
        limit = self.settings.core.heartbeat_timeout
        for proc in self.workers.values():
            if proc.retire_by is not None and time.monotonic() > proc.retire_by:
                self._retire_timeout(proc)
            beat = self.shm.heartbeats.read(proc.ident.index).beat
            if (now_ns - beat) / 1e9 <= limit:
                continue
            # Two steps: SIGABRT first, SIGKILL on the next miss (style rule 14).
            sig = signal.SIGABRT if proc.misses == 0 else signal.SIGKILL
            logger.error(
                "worker %d (pid %d) missed its heartbeat: %s", proc.ident.slot, proc.pid, sig.name
            )
            self._signal(proc, sig)
            proc.misses += 1

    def _retire_timeout(self, proc: WorkerProc) -> None:
        """retire_timeout passed: stop the worker like `msrpd stop` would (its connections
        finish the frame they are in), and kill it if that takes over drain_timeout."""
        if proc.retire_stopped:
            self._signal(proc, signal.SIGKILL)
            return
        logger.info(
            "worker %d (pid %d): retire_timeout passed, stopping it", proc.ident.slot, proc.pid
        )
        self._signal(proc, signal.SIGTERM)
        proc.retire_stopped = True
        proc.retire_by = time.monotonic() + self.settings.core.drain_timeout + 1.0

    def sweep(self) -> None:
        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + self.settings.msrp.timer_interval
        wall = time.time()
        for name, table in (("cmap", self.shm.cmap), ("htable", self.shm.htable)):
            removed = sum(table.sweep_stripe(i, wall) for i in range(table.n_stripes))
            if removed:
                logger.info("%s: %d expired items removed", name, removed)

    # -- helpers ----------------------------------------------------------------------------

    def _signal(self, proc: WorkerProc, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)

    def _kill_all(self, signum: int) -> None:
        for proc in list(self.workers.values()):
            self._signal(proc, signum)

    def _reap_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.workers and time.monotonic() < deadline:
            with contextlib.suppress(HaltSupervisor):
                self.reap()
            time.sleep(0.05)

    def _notify_ready(self, message: str) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, message.encode() + b"\n")
            os.close(self.ready_fd)
        self.ready_fd = None
