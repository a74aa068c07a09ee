"""Boot: what a worker builds once after fork, before it serves (worker.py runs it).

Anything that fails here raises BootError: the worker exits with WORKER_BOOT_ERROR and the
supervisor halts instead of fork-looping.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence

import psutil

from ..config import ListenAddress, Settings
from ..config.selfuri import SelfUris
from ..process.listeners import listen_backlog
from ..routing import RouteLoadError, RoutePolicy, load_route
from ..routing.users import UserStore
from ..shm import ShmSet
from .connapi import Connection
from .context import WorkerContext, WorkerIdentity
from .delivery import Delivery
from .loopback import Loopback
from .transports.tls import client_context, server_context

__all__ = ["BootError", "build_context", "listen"]


class BootError(Exception):
    pass


def build_context(
    settings: Settings,
    ident: WorkerIdentity,
    shm: ShmSet,
    nonce_secret: bytes,
    loop: asyncio.AbstractEventLoop,
    dial: Callable[[WorkerContext, bool], Connection],
) -> WorkerContext:
    """The worker's context: routing script, policy, users, delivery (outbound connections
    made by `dial(ctx, secure)`) and loopback."""
    try:
        route = load_route(settings.msrp.route, settings.msrp.event_callback)
        tls_client = client_context(settings.tls)
    except (RouteLoadError, OSError, ssl.SSLError) as exc:
        raise BootError(str(exc)) from None
    policy = RoutePolicy(
        auth_min_expires=settings.msrp.auth_min_expires,
        auth_max_expires=settings.msrp.auth_max_expires,
        use_path_addr=settings.msrp.use_path_addr,
        realm=settings.auth.realm,
        sipmsg=settings.msrp.sipmsg,
    )
    users = UserStore(settings.auth.users) if settings.auth.users else None
    ctx = WorkerContext(settings, ident, shm, route, policy, nonce_secret, loop)
    ctx.users = users
    ctx.delivery = Delivery(ctx, tls_client, lambda secure: dial(ctx, secure))
    m = settings.msrp
    self_uris = SelfUris.build(
        settings.core.listen, m.use_path_addr, m.aliases, _local_hosts(settings.core.listen)
    )
    ctx.loopback = Loopback(ctx, self_uris)
    return ctx


async def listen(
    ctx: WorkerContext,
    sockets: Sequence[tuple[socket.socket, ListenAddress]],
    accepted: Callable[[WorkerContext, str, bool], asyncio.BaseProtocol],
) -> list[asyncio.Server]:
    """Serve each listening socket; `accepted(ctx, listen_text, secure)` makes the protocol
    object of each connection accepted on it."""
    settings = ctx.settings
    try:
        tls = server_context(settings.tls) if any(a.proto == "tls" for _, a in sockets) else None
    except (OSError, ssl.SSLError) as exc:
        raise BootError(f"TLS: {exc}") from None
    servers = []
    # create_server listens again, with asyncio's backlog of 100 unless told (issue 12).
    backlog = listen_backlog(settings.core.backlog)
    for sock, addr in sockets:
        secure = addr.proto == "tls"
        servers.append(
            await ctx.loop.create_server(
                lambda text=str(addr), secure=secure: accepted(ctx, text, secure),
                sock=sock,
                ssl=tls if secure else None,
                backlog=backlog,
            )
        )
    return servers


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
