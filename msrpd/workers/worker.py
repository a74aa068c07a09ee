"""Worker: the post-fork main of one of the supervisor's N children.

Strategy (gunicorn's Worker, nginx's worker cycle; style rules 11-14):
- `Worker.__init__` runs before fork and only stores values. `Worker.run()` runs in the child:
  proctitle, uvloop loop, shared memory, routing script, listeners, handoff link, signals.
  Anything that fails there exits with WORKER_BOOT_ERROR, so the supervisor halts instead of
  fork-looping.
- Once a second the worker beats its heartbeat slot, publishes its counters, closes idle
  connections, and exits if its supervisor is gone (no orphans).
- SIGTERM: stop. Close the listeners; connections read no new frame (one relaying a streamed
  frame finishes it); deliver what is queued, report what cannot be delivered before
  drain_timeout to its sender, close gracefully, exit (stopping.py).
- SIGUSR2: retire after a reload. Close the listeners, hand every plain TCP connection a
  client opened to the new generation as soon as it is between frames (retire.py), take
  the links to next hops out of the registry and close each once quiet (retirelinks.py),
  keep serving TLS connections until they close, then exit once no move is unfinished and
  the handoff link is quiet. No deadline: the supervisor sends SIGTERM
  when retire_timeout (of the new configuration) is set and passes.
- SIGINT/SIGQUIT: exit now.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass

import uvloop

from ..config import ListenAddress, Settings
from ..process.heap import keep_heap
from ..process.title import set_title
from ..rundir import ctl_path, handoff_path
from ..shm import ShmLayout, ShmSet, WorkerState
from .boot import BootError, build_routes, listen, passed_conn
from .connapi import Connection
from .context import WorkerContext, WorkerIdentity
from .ctl import WorkerCtlServer, worker_handlers
from .delivery import Delivery
from .gone import GoneReports, SentMemory
from .housekeeping import close_idle, publish
from .inbound import Inbound
from .links import HandoffHub
from .migrate.build import build_migration
from .migrate.retire import Retirer
from .routeenv import RouteRunner
from .signals import Mode, install_signals
from .stopping import GracefulStop
from .stopstate import QUIET, StopState
from .txrelay import TxRelay

__all__ = ["WORKER_BOOT_ERROR", "Worker", "WorkerSpec"]

logger = logging.getLogger(__name__)

WORKER_BOOT_ERROR = 3
TICK = 1.0
STOP_POLL = 0.05


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    settings: Settings
    ident: WorkerIdentity
    sockets: tuple[tuple[socket.socket, ListenAddress], ...]
    layout: ShmLayout
    nonce_secret: bytes
    supervisor_pid: int


class Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        # Pre-fork: store only (gunicorn workers/base.py).
        self.spec = spec
        self.mode = Mode.RUNNING
        self.deadline = 0.0
        self.wakeup: asyncio.Event | None = None
        self.ctl: WorkerCtlServer | None = None
        self.stop: GracefulStop | None = None
        self.routes: RouteRunner | None = None
        self.reports: GoneReports | None = None
        self.delivery: Delivery | None = None
        self.transactions: TxRelay | None = None
        self.term_at = 0.0
        """When SIGTERM came (monotonic; 0: not yet)."""
        self.retirer: Retirer[Connection] | None = None
        self.leaving = 0.0
        """When a retired worker with nothing left said EXITING (monotonic; 0: not yet)."""

    def run(self) -> int:
        """The child's main; returns the exit status."""
        spec = self.spec
        set_title(f"worker {spec.ident.slot}")
        random.seed()
        if not keep_heap():  # big messages reuse the heap instead of fresh pages (heap.py)
            logger.info(
                "worker %d: no mallopt (not glibc): the C heap keeps its own", spec.ident.slot
            )
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            shm = spec.layout.attach_all()
        except Exception as exc:
            logger.error("worker %d: cannot attach shared memory: %s", spec.ident.slot, exc)
            return WORKER_BOOT_ERROR
        try:
            return loop.run_until_complete(self._main(loop, shm))
        except BootError as exc:
            logger.error("worker %d cannot start: %s", spec.ident.slot, exc)
            return WORKER_BOOT_ERROR
        finally:
            shm.close()
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop, shm: ShmSet) -> int:
        ctx = self._context(loop, shm)
        servers = await self._listen(ctx)
        self.wakeup = asyncio.Event()
        install_signals(loop, lambda: self._term(loop, ctx), self._set_mode)
        # What boot made lives as long as the worker: keep the collector from walking it
        # again and again (and from touching pages shared with the supervisor after fork).
        gc.freeze()
        shm.heartbeats.beat(ctx.ident.index, WorkerState.RUNNING, 0)
        try:
            await self._serve(ctx)
        finally:
            for server in servers:
                server.close()
            for conn in list(ctx.conns.values()):
                conn.abort()
            if self.ctl is not None:
                await self.ctl.close()
            if ctx.balancer is not None:
                ctx.balancer.close()
            if ctx.mover is not None:
                ctx.mover.close()
            if ctx.hub is not None:
                await ctx.hub.close()
            if self.routes is not None:
                self.routes.guard.close()
                if self.routes.users is not None:
                    await self.routes.users.aclose()
                if self.routes.finder is not None:
                    self.routes.finder.close()
            publish(ctx)
        return 0

    def _context(self, loop: asyncio.AbstractEventLoop, shm: ShmSet) -> WorkerContext:
        spec, settings = self.spec, self.spec.settings
        ident = spec.ident
        stop = StopState()
        sent = SentMemory(stop, settings.core.handoff_memory)
        own_path = handoff_path(settings.core.run_dir, ident.slot, ident.generation)

        def hub(ctx: WorkerContext) -> HandoffHub:
            # What other workers hand us goes down to our connections (inbound.py); a GONE
            # reports the lost frame to its sender (gone.py).
            reports = self.reports = GoneReports(sent, ctx)
            # Responses other workers read for our transactions come here too (txrelay.py).
            self.transactions = TxRelay(ctx, reports)
            return HandoffHub(own_path, loop, Inbound(ctx, reports, self.transactions), stop=stop)

        ctx = WorkerContext(settings, ident, shm, loop, hub, stop, sent)
        self.routes, self.delivery = build_routes(ctx, spec.nonce_secret, self.transactions)
        return ctx

    async def _listen(self, ctx: WorkerContext) -> list[asyncio.Server]:
        settings, routes = self.spec.settings, self.routes
        assert routes is not None  # built with the context (_context)
        servers = await listen(ctx, routes, self.spec.sockets)
        hub = ctx.hub
        assert hub is not None
        await hub.start()
        ident = ctx.ident
        migration = build_migration(
            ctx,
            ctx.conns,
            ctx.shm.heartbeats,
            run_dir=settings.core.run_dir,
            me=(ident.slot, ident.generation),
            index=ident.index,
            colocate=settings.core.balance,
            linger=settings.core.drain_timeout,
            delivery=self.delivery,
            new_conn=lambda text: passed_conn(ctx, routes, text),
            adopt=lambda sock, text: _adopt(ctx, routes, sock, text),
        )
        try:
            migration.balancer.start()
        except OSError as exc:
            raise BootError(f"accept socket: {exc}") from None
        ctx.balancer, ctx.mover = migration.balancer, migration.mover
        self.retirer = migration.retirer
        self.ctl = WorkerCtlServer(
            ctl_path(settings.core.run_dir, ident.slot, ident.generation),
            worker_handlers(ctx),
        )
        try:
            await self.ctl.start()
        except OSError as exc:
            raise BootError(f"control socket: {exc}") from None
        self.servers = servers
        return servers

    def _term(self, loop: asyncio.AbstractEventLoop, ctx: WorkerContext) -> None:
        """SIGTERM (signals.py: runs at once, inside a long loop iteration too)."""
        if self.mode is Mode.RUNNING or self.mode is Mode.DRAINING:
            self.term_at = self.term_at or time.monotonic()
            # Connections read no new frame from here on, and a handoff peer's EOF now
            # means "done sending" (links.py).
            ctx.stop.stopping = True
        loop.call_soon_threadsafe(self._set_mode, Mode.STOPPING, ctx)

    def _set_mode(self, mode: Mode, ctx: WorkerContext | None = None) -> None:
        # A stop also ends a retirement (the supervisor's TERM reaches every worker).
        stop_retiring = self.mode is Mode.DRAINING and mode is Mode.STOPPING
        if self.mode is Mode.RUNNING or mode is Mode.EXITING or stop_retiring:
            self.mode = mode
            # Retiring has no deadline of its own (the module docstring says why).
            limit = math.inf if mode is Mode.DRAINING else self.spec.settings.core.drain_timeout
            started = self.term_at if mode is Mode.STOPPING and self.term_at else time.monotonic()
            self.deadline = started + limit
            if mode is Mode.DRAINING and self.retirer is not None:
                self.retirer.start()
            if mode is Mode.STOPPING and ctx is not None and self.stop is None:
                # Now, not at the next tick: a busy loop takes a while to get there.
                self.stop = GracefulStop(ctx, self._reports(), started, self.deadline)
        if self.wakeup is not None:
            self.wakeup.set()

    async def _serve(self, ctx: WorkerContext) -> None:
        while True:
            assert self.wakeup is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._tick_length())
            self.wakeup.clear()
            if self._tick(ctx):
                return

    def _reports(self) -> GoneReports:
        assert self.reports is not None  # built with the context (_context)
        return self.reports

    def _tick_length(self) -> float:
        return TICK if self.mode is Mode.RUNNING else STOP_POLL

    def _tick(self, ctx: WorkerContext) -> bool:
        """Housekeeping; True when the worker should exit now."""
        mode = self.mode
        if os.getppid() != self.spec.supervisor_pid:
            logger.warning("worker %d: supervisor is gone, exiting", ctx.ident.slot)
            return True
        if mode is Mode.EXITING:
            return True
        if mode is not Mode.RUNNING:
            self._retire(ctx, mode)
            if time.monotonic() >= self.deadline:
                if ctx.conns:
                    logger.info("worker %d: closing %d connections", ctx.ident.slot, len(ctx.conns))
                if self.stop is not None:
                    self.stop.exit()
                return True
            # Not merely "no connection": a move may be unfinished, links may still hold
            # frames, closed sockets may still hold our bytes (stopping.py).
            if mode is Mode.STOPPING and self.stop is not None and self.stop.finished:
                return True
            if mode is Mode.DRAINING and self._retired(ctx):
                return True
        close_idle(ctx)
        if self.routes is not None:
            self.routes.guard.tick(time.monotonic())  # probation ([limits])
        state = WorkerState.RUNNING if mode is Mode.RUNNING else WorkerState.DRAINING
        if self.leaving:
            state = WorkerState.EXITING
        ctx.shm.heartbeats.beat(ctx.ident.index, state, len(ctx.conns))
        if ctx.balancer is not None:
            ctx.balancer.refresh()
        if ctx.mover is not None:
            ctx.mover.tick()
        publish(ctx)
        return False

    def _retire(self, ctx: WorkerContext, mode: Mode) -> None:
        for server in self.servers:
            if server.is_serving():
                server.close()
                set_title(f"worker {ctx.ident.slot} (draining)")
        if mode is Mode.STOPPING:
            # Deliver or report every frame answered before the stop (stopping.py).
            if self.stop is None:
                started = self.deadline - self.spec.settings.core.drain_timeout
                self.stop = GracefulStop(ctx, self._reports(), started, self.deadline)
            self.stop.tick(time.monotonic())

    def _retired(self, ctx: WorkerContext) -> bool:
        """Retiring and nothing left: no connection, no move unfinished, the handoff link
        quiet, and nothing more can be passed here."""
        retirer, balancer = self.retirer, ctx.balancer
        if retirer is None or balancer is None:
            return not ctx.conns
        now = time.monotonic()
        if self.leaving:
            # A fence sent before the other worker saw EXITING is still answered meanwhile.
            return now - self.leaving > QUIET
        retirer.step()
        if not retirer.done() or ctx.tasks or now - ctx.last_delivery <= QUIET:
            return False
        if balancer.shut():
            return False  # connections were on their way here: serve (and hand over) them
        self.leaving = now
        ctx.shm.heartbeats.beat(ctx.ident.index, WorkerState.EXITING, 0)
        took = now - retirer.started
        logger.info(
            "worker %d retired: %d connections handed over in %.2f s",
            ctx.ident.slot,
            retirer.moved,
            took,
        )
        return False


def _adopt(ctx: WorkerContext, routes: RouteRunner, sock: socket.socket, listen_text: str) -> None:
    """A connection another worker accepted and passed here (balance.py)."""
    ctx.serve_socket(passed_conn(ctx, routes, listen_text), sock)
