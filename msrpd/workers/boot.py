"""Boot: what a worker builds once after fork, before it serves (worker.py runs it): route
running and delivery, the listeners, and the connection object for each way a connection
starts here (accepted, passed or moved from another worker, dialled to a next hop).

Anything that fails here raises BootError: the worker exits with WORKER_BOOT_ERROR and the
supervisor halts instead of fork-looping.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import psutil

from ..cluster.finder import NodeFinder
from ..cluster.nodecerts import NodeCerts
from ..cluster.report import FailureReport
from ..config import ListenAddress, Settings
from ..config.address import Proto
from ..config.selfuri import SelfUris
from ..process.listeners import listen_backlog
from ..protocol import ReaderLimits
from ..routing import RouteLoadError, RoutePolicy, load_route
from ..rundir import agent_report_path, agent_where_path
from ..users.open import worker_source
from .conn import MsrpConnection
from .context import WorkerContext
from .delivery import Delivery
from .gone import GoneReports
from .limits import ConnGuard
from .loopback import Loopback
from .migrate.state import MigrationState
from .routeenv import RouteRunner
from .transports.base import Wire
from .transports.tcp import TcpWire
from .transports.tls import TlsReading, TlsWire, client_context, server_context
from .transports.ws import WsWire
from .txrelay import TxRelay

__all__ = [
    "BootError",
    "accepted_conn",
    "build_routes",
    "dialed_conn",
    "listen",
    "passed_conn",
]


class BootError(Exception):
    pass


def build_routes(
    ctx: WorkerContext, nonce_secret: bytes, transactions: TxRelay | None = None
) -> tuple[RouteRunner, Delivery]:
    """Route running (script, policy, users, loopback, the [limits] guard, `transactions`:
    the worker's transaction layer, made here when not given) and the delivery layer it
    relays through."""
    settings = ctx.settings
    try:
        route = load_route(settings.msrp.route, settings.msrp.event_callback)
        node_ca = _node_ca(settings)
        tls_client = client_context(settings.tls, node_ca)
        node_certs = None if node_ca is None else NodeCerts(node_ca)
    except (RouteLoadError, OSError, ssl.SSLError) as exc:
        raise BootError(str(exc)) from None
    policy = RoutePolicy(
        auth_min_expires=settings.msrp.auth_min_expires,
        auth_max_expires=settings.msrp.auth_max_expires,
        use_path_addr=settings.msrp.use_path_addr,
        realm=settings.auth.realm,
        sipmsg=settings.msrp.sipmsg,
        block_unknown_methods=settings.msrp.block_unknown_methods,
    )
    users = worker_source(settings.auth, ctx.loop, ctx.counters)
    m = settings.msrp
    limits = ReaderLimits(max_head=m.max_head, max_body=m.max_body)
    self_uris = SelfUris.build(
        settings.core.listen, m.use_path_addr, m.aliases, _local_hosts(settings.core.listen)
    )
    loopback = Loopback(route, limits, ctx.counters, self_uris)
    shm = ctx.shm
    guard = ConnGuard(
        settings.limits,
        settings.core.children,
        ctx.ident.index,
        shm.addrs,
        shm.users,
        shm.cmap,
        ctx.counters,
        ctx.loop,
        _failure_report(settings),
        shm.remote_users if settings.cluster.redis is not None else None,
    )
    # Late bound: an outbound connection runs the routes that relay through this delivery.
    delivery = Delivery(
        ctx, tls_client, lambda secure: dialed_conn(ctx, routes, secure), guard.connect_allowed
    )
    ctx.delivery = delivery
    routes = RouteRunner(
        route,
        policy,
        nonce_secret,
        ctx.shm,
        ctx.counters,
        limits,
        guard,
        delivery=delivery,
        loopback=loopback,
        users=users,
        transactions=transactions or TxRelay(ctx, GoneReports(ctx.handoffs.sent, ctx)),
        finder=None if node_certs is None else _finder(ctx, self_uris),
        node_certs=node_certs,
    )
    return routes, delivery


async def listen(
    ctx: WorkerContext, routes: RouteRunner, sockets: Sequence[tuple[socket.socket, ListenAddress]]
) -> list[asyncio.Server]:
    """Serve each listening socket."""
    settings = ctx.settings
    balance = settings.core.balance
    try:
        tls = server_context(settings.tls) if any(a.secure for _, a in sockets) else None
        node_ca = _node_ca(settings)
        # tls: listeners verify a node's certificate too (cluster/nodecerts.py); wss ones not.
        msrps = tls if node_ca is None or tls is None else server_context(settings.tls, node_ca)
    except (OSError, ssl.SSLError) as exc:
        raise BootError(f"TLS: {exc}") from None
    servers = []
    reading = TlsReading()  # one read buffer for every TLS connection the listeners accept
    # create_server listens again, with asyncio's backlog of 100 unless told (issue 12).
    backlog = listen_backlog(settings.core.backlog)
    # A TLS handshake is part of probation: a connection that never completes one is closed
    # then too (RFC 4976 §6.1).
    handshake = settings.limits.probation
    for sock, addr in sockets:
        context = (msrps if addr.proto == "tls" else tls) if addr.secure else None
        secure = None if context is None else (reading, context, handshake)
        servers.append(
            await ctx.loop.create_server(
                partial(accepted_conn, ctx, routes, str(addr), addr.proto, balance, secure),
                sock=sock,
                backlog=backlog,
            )
        )
    return servers


Secure = tuple[TlsReading, ssl.SSLContext, float]
"""How a secure listener's connections run TLS (transports/tlsstream.py): the shared read
buffer, the context, the handshake's timeout."""


def accepted_conn(
    ctx: WorkerContext,
    routes: RouteRunner,
    listen_text: str,
    proto: Proto,
    balance: bool,
    secure: Secure | None = None,
) -> asyncio.BaseProtocol:
    """What serves a socket this worker accepted on a `proto` listener: a connection object,
    behind a TLS stream on a secure one (transports/tlsstream.py)."""
    wire: Wire
    if proto == "tcp":
        wire = TcpWire(listen_text)
    elif proto == "tls":
        wire = TlsWire(listen_text)
    else:
        wire = WsWire(listen_text, ctx.settings.websocket, secure=proto == "wss")
    # Plain TCP can move to another worker (a reload's handover, whatever `balance` says;
    # colocation only with it); TLS and WebSocket state lives in this process.
    migration = MigrationState(balance=balance and wire.movable, movable=wire.movable)
    conn = MsrpConnection(ctx, routes, wire, migration=migration)
    if secure is None:
        return conn
    reading, context, timeout = secure
    return reading.stream(conn, context, timeout)


def passed_conn(ctx: WorkerContext, routes: RouteRunner, listen_text: str) -> MsrpConnection:
    """A connection object for a socket another worker passed or moved here."""
    return MsrpConnection(ctx, routes, TcpWire(listen_text), migration=MigrationState(movable=True))


def dialed_conn(ctx: WorkerContext, routes: RouteRunner, secure: bool) -> MsrpConnection:
    """A connection object for a connection this worker opens to a next hop (delivery.py)."""
    return MsrpConnection(ctx, routes, TlsWire() if secure else TcpWire())


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


def _node_ca(settings: Settings) -> Path | None:
    """[cluster] node_ca when this node is in a cluster: it then forwards between nodes."""
    return None if settings.cluster.redis is None else settings.cluster.node_ca


def _finder(ctx: WorkerContext, self_uris: SelfUris) -> NodeFinder:
    """The token lookups of forwarding between nodes, asked of the node's cluster agent."""
    settings = ctx.settings
    path = agent_where_path(settings.core.run_dir)
    return NodeFinder(path, settings.cluster.timeout, ctx.counters, ctx.loop, self_uris.matches)


def _failure_report(settings: Settings) -> FailureReport | None:
    """Where failed AUTHs go to be counted over the cluster: the node's agent (issue 17)."""
    if settings.cluster.redis is None:
        return None
    return FailureReport(agent_report_path(settings.core.run_dir))
