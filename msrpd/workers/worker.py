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
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from enum import Enum

import psutil
import uvloop

from ..config import ListenAddress, Settings
from ..config.selfuri import SelfUris
from ..process.listeners import listen_backlog
from ..process.logs import reopen_logs
from ..process.title import set_title
from ..protocol import ReaderLimits
from ..routing import RouteLoadError, RoutePolicy, load_route
from ..routing.users import UserStore
from ..rundir import ctl_path, handoff_path
from ..shm import Counter, ShmLayout, ShmSet, WorkerState
from .conn import MsrpConnection
from .context import WorkerContext, WorkerIdentity
from .ctl import WorkerCtlServer, worker_handlers
from .delivery import Delivery
from .gone import GoneReports, SentMemory
from .inbound import Inbound
from .links import HandoffHub
from .loopback import Loopback
from .migrate.build import build_migration
from .migrate.retire import Retirer
from .migrate.state import MigrationState
from .routeenv import RouteRunner
from .stopping import GracefulStop
from .stopstate import QUIET, StopState
from .tls import client_context, server_context

__all__ = ["WORKER_BOOT_ERROR", "Worker", "WorkerSpec"]

logger = logging.getLogger(__name__)

WORKER_BOOT_ERROR = 3
TICK = 1.0
STOP_POLL = 0.05


class Mode(Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    EXITING = "exiting"


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
        self.term_at = 0.0
        """When SIGTERM came (monotonic; 0: not yet)."""
        self.retirer: Retirer[MsrpConnection] | None = None
        self.leaving = 0.0
        """When a retired worker with nothing left said EXITING (monotonic; 0: not yet)."""

    def run(self) -> int:
        """The child's main; returns the exit status."""
        spec = self.spec
        set_title(f"worker {spec.ident.slot}")
        random.seed()
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            shm = spec.layout.attach_all()
        except Exception as exc:
            logger.error("worker %d: cannot attach shared memory: %s", spec.ident.slot, exc)
            return WORKER_BOOT_ERROR
        try:
            return loop.run_until_complete(self._main(loop, shm))
        except _BootError as exc:
            logger.error("worker %d cannot start: %s", spec.ident.slot, exc)
            return WORKER_BOOT_ERROR
        finally:
            shm.close()
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop, shm: ShmSet) -> int:
        ctx = self._context(loop, shm)
        servers = await self._listen(ctx)
        self._signals(loop, ctx)
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
            self._publish(ctx)
        return 0

    def _context(self, loop: asyncio.AbstractEventLoop, shm: ShmSet) -> WorkerContext:
        spec, settings = self.spec, self.spec.settings
        try:
            route = load_route(settings.msrp.route, settings.msrp.event_callback)
            tls_client = client_context(settings.tls)
        except (RouteLoadError, OSError, ssl.SSLError) as exc:
            raise _BootError(str(exc)) from None
        policy = RoutePolicy(
            auth_min_expires=settings.msrp.auth_min_expires,
            auth_max_expires=settings.msrp.auth_max_expires,
            use_path_addr=settings.msrp.use_path_addr,
            realm=settings.auth.realm,
            sipmsg=settings.msrp.sipmsg,
        )
        users = UserStore(settings.auth.users) if settings.auth.users else None
        ident = spec.ident
        stop = StopState()
        sent = SentMemory(stop)
        own_path = handoff_path(settings.core.run_dir, ident.slot, ident.generation)

        def hub(ctx: WorkerContext) -> HandoffHub:
            # What other workers hand us goes down to our connections (inbound.py); a GONE
            # reports the lost frame to its sender (gone.py).
            reports = self.reports = GoneReports(sent, ctx)
            return HandoffHub(own_path, loop, Inbound(ctx, reports), stop=stop)

        ctx = WorkerContext(settings, ident, shm, loop, hub, stop, sent)
        m = settings.msrp
        limits = ReaderLimits(max_head=m.max_head, max_body=m.max_body)
        self_uris = SelfUris.build(
            settings.core.listen, m.use_path_addr, m.aliases, _local_hosts(settings.core.listen)
        )
        loopback = Loopback(route, limits, ctx.counters, self_uris)
        delivery = Delivery(ctx, tls_client, lambda secure: MsrpConnection(ctx, routes, "", secure))
        ctx.delivery = self.delivery = delivery
        self.routes = routes = RouteRunner(
            route,
            policy,
            spec.nonce_secret,
            shm,
            ctx.counters,
            limits,
            delivery=delivery,
            loopback=loopback,
            users=users,
        )
        return ctx

    async def _listen(self, ctx: WorkerContext) -> list[asyncio.Server]:
        settings, routes = self.spec.settings, self.routes
        assert routes is not None  # built with the context (_context)
        try:
            tls = (
                server_context(settings.tls)
                if any(addr.proto == "tls" for _, addr in self.spec.sockets)
                else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise _BootError(f"TLS: {exc}") from None
        servers = []
        balance = settings.core.balance
        # create_server listens again, with asyncio's backlog of 100 unless told (issue 12).
        backlog = listen_backlog(settings.core.backlog)
        for sock, addr in self.spec.sockets:
            secure = addr.proto == "tls"
            servers.append(
                await ctx.loop.create_server(
                    lambda text=str(addr), secure=secure: _accepted_conn(
                        ctx, routes, text, secure, balance
                    ),
                    sock=sock,
                    ssl=tls if secure else None,
                    backlog=backlog,
                )
            )
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
            new_conn=lambda text: _passed_conn(ctx, routes, text),
            adopt=lambda sock, text: _adopt(ctx, routes, sock, text),
        )
        try:
            migration.balancer.start()
        except OSError as exc:
            raise _BootError(f"accept socket: {exc}") from None
        ctx.balancer, ctx.mover = migration.balancer, migration.mover
        self.retirer = migration.retirer
        self.ctl = WorkerCtlServer(
            ctl_path(settings.core.run_dir, ident.slot, ident.generation),
            worker_handlers(ctx),
        )
        try:
            await self.ctl.start()
        except OSError as exc:
            raise _BootError(f"control socket: {exc}") from None
        self.servers = servers
        return servers

    def _signals(self, loop: asyncio.AbstractEventLoop, ctx: WorkerContext) -> None:
        self.wakeup = asyncio.Event()

        def term(signum: int, frame: object) -> None:
            # A plain handler, not the loop's: it runs at the next bytecode, inside a long
            # loop iteration too (uvloop runs pending handlers when its wakeup fd fires), so
            # a busy worker stops reading at once, and its drain_timeout counts from the
            # supervisor's signal, as the supervisor's kill does (issue 12 item 5).
            if self.mode is Mode.RUNNING or self.mode is Mode.DRAINING:
                self.term_at = self.term_at or time.monotonic()
                # Connections read no new frame from here on, and a handoff peer's EOF now
                # means "done sending" (links.py).
                ctx.stop.stopping = True
            loop.call_soon_threadsafe(self._set_mode, Mode.STOPPING, ctx)

        signal.signal(signal.SIGTERM, term)
        loop.add_signal_handler(signal.SIGUSR2, self._set_mode, Mode.DRAINING)
        loop.add_signal_handler(signal.SIGINT, self._set_mode, Mode.EXITING)
        loop.add_signal_handler(signal.SIGQUIT, self._set_mode, Mode.EXITING)
        loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

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
        self._close_idle(ctx)
        state = WorkerState.RUNNING if mode is Mode.RUNNING else WorkerState.DRAINING
        if self.leaving:
            state = WorkerState.EXITING
        ctx.shm.heartbeats.beat(ctx.ident.index, state, len(ctx.conns))
        if ctx.balancer is not None:
            ctx.balancer.refresh()
        if ctx.mover is not None:
            ctx.mover.tick()
        self._publish(ctx)
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

    def _close_idle(self, ctx: WorkerContext) -> None:
        now = time.monotonic()
        core = ctx.settings.core
        limit = now - core.idle_timeout
        head_limit = now - core.head_timeout
        for conn in list(ctx.conns.values()):
            if conn.sent_log.records:
                conn.trim_sent()  # so a quiet connection keeps no relayed frame alive
            if conn.last_active < limit:
                idle = core.idle_timeout
                logger.info("closing %s: idle for %.0f s", conn.peer_key, idle)
                conn.close(f"idle for {idle:.0f} s")
            elif conn.head_overdue(head_limit):
                # Slowloris: every byte refreshes last_active, so only a deadline per head
                # ends a connection that never completes one.
                ctx.counters.add(Counter.head_timeouts)
                logger.info(
                    "closing %s: frame head not complete after %.0f s",
                    conn.peer_key,
                    core.head_timeout,
                )
                conn.close(f"frame head not complete after {core.head_timeout:.0f} s")

    def _publish(self, ctx: WorkerContext) -> None:
        ctx.counters.values[Counter.conns_open] = len(ctx.conns)
        ctx.shm.stats.publish(ctx.ident.index, ctx.counters)


class _BootError(Exception):
    pass


def _local_hosts(listen: tuple[ListenAddress, ...]) -> list[str]:
    """The interfaces' addresses, when a listen address is a wildcard (selfuri.py)."""
    if not any(addr.host in ("0.0.0.0", "::") for addr in listen):
        return []
    families = (socket.AF_INET, socket.AF_INET6)
    return [
        a.address.split("%")[0]  # an IPv6 link-local address carries its zone
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in families
    ]


def _accepted_conn(
    ctx: WorkerContext, routes: RouteRunner, listen_text: str, secure: bool, balance: bool
) -> MsrpConnection:
    """A connection object for a socket this worker accepted."""
    # Plain TCP can move to another worker (a reload's handover, whatever `balance` says;
    # colocation only with it); TLS state lives in this process.
    migration = MigrationState(balance=balance and not secure, movable=not secure)
    return MsrpConnection(ctx, routes, listen_text, secure, migration=migration)


def _passed_conn(ctx: WorkerContext, routes: RouteRunner, listen_text: str) -> MsrpConnection:
    """A connection object for a socket another worker passed or moved here."""
    return MsrpConnection(ctx, routes, listen_text, False, migration=MigrationState(movable=True))


def _adopt(ctx: WorkerContext, routes: RouteRunner, sock: socket.socket, listen_text: str) -> None:
    """A connection another worker accepted and passed here (balance.py)."""
    ctx.serve_socket(_passed_conn(ctx, routes, listen_text), sock)
