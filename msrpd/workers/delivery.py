"""Delivery: turn a relay destination into a sink, reusing connections across workers.

Strategy (reference §6.3, DESIGN §2):
- A cmap hit names the connection id; its owner is encoded in it (slot, generation), so the
  frame goes to our own transport or over the handoff link to the owner, draining
  generations included.
- An address (set_dst, To-Path) is looked up in the shared connection registry, so an existing
  connection to that peer is reused whichever worker owns it. A To-Path URI finds only
  connections the relay opened; a client's inbound connection only when the script chose its
  address with set_dst (issue 12: knowing a client's address must not let anyone write to
  it; rfc-checklist §2.1 step 8). A next hop without a port is 2855 (RFC 4975 §9), not
  Kamailio's 5060.
- Otherwise, unless flag 1 (reuse only) is set, this worker opens an outbound connection
  (TLS for msrps) and owns it; frames queue on it until it is up. Connects are bounded and a
  failed one releases what it holds (dialing.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ..protocol import MsrpUri
from ..routing.env import Destination, SendFlags
from .conn import MsrpConnection, format_peer, registry_key
from .dialing import Dialing
from .handoff import conid_owner
from .sinks import HandoffSink, LocalSink, Sink

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["Delivery"]

logger = logging.getLogger(__name__)


class Delivery:
    def __init__(self, ctx: WorkerContext, client_tls: ssl.SSLContext | None) -> None:
        self.ctx = ctx
        self.client_tls = client_tls
        self.outbound: dict[str, MsrpConnection] = {}
        self.dialing = Dialing(ctx)
        self.private = False
        """Retiring: links opened from now on stay out of the registry (retirelinks.py)."""

    def resolve(self, dest: Destination, flags: int) -> Sink | None:
        if dest.conid is not None:
            return self.for_conid(dest.conid)
        uri = dest.uri
        if uri is None:
            return None
        host, port = uri.address()
        key = f"{'tls' if uri.secure else 'tcp'}:{format_peer(host, port)}"
        registry = self.ctx.registry
        if registry is not None:
            for known in (registry_key(key, False), key) if dest.chosen else (key,):
                conid = registry.lookup(known)
                sink = None if conid is None else self.for_conid(conid)
                if sink is not None:
                    return sink
        pending = self.outbound.get(key)
        if pending is not None and not pending.closed:
            return self.dialing.park(pending, key)
        if flags & SendFlags.REUSE_ONLY:
            logger.info("relay to %s: no connection and flag 1 forbids opening one", key)
            return None
        refused = self.dialing.refusal(key)
        if refused is not None:
            return self.dialing.fail_now(key, refused)
        return self._open(key, uri, host, port)

    def for_conid(self, conid: int) -> Sink | None:
        ctx = self.ctx
        owner = conid_owner(conid)
        source = ctx.current_conn
        if owner == (ctx.ident.slot, ctx.ident.generation):
            conn = ctx.conns.get(conid)
            if source is not None:
                source.migration.streak_owner = None
            if conn is not None and not conn.closed:
                return LocalSink(conn)
            return None if ctx.mover is None else ctx.mover.sink_for(conid)  # moved away
        if ctx.hub is None:
            return None
        if source is not None and source.migration.movable and ctx.mover is not None:
            ctx.mover.note_remote(source, owner, conid)
        path = ctx.handoff_path(*owner)
        return HandoffSink(ctx.hub, path, conid, ctx.next_token, ctx.counters, ctx.throttle_handoff)

    def _open(self, key: str, uri: MsrpUri, host: str, port: int) -> Sink | None:
        tls = self.client_tls if uri.secure else None
        if uri.secure and tls is None:
            logger.warning("relay to %s: msrps next hop but no TLS client context", key)
            return None
        conn = MsrpConnection(self.ctx, "", uri.secure)
        conn.outbound = True
        conn.listed = not self.private
        self.outbound[key] = conn
        self.dialing.started(conn)
        task = self.ctx.loop.create_task(self._connect(key, conn, host, port, tls))
        self.ctx.tasks.add(task)
        task.add_done_callback(self.ctx.tasks.discard)
        return self.dialing.park(conn, key)

    async def _connect(
        self, key: str, conn: MsrpConnection, host: str, port: int, tls: ssl.SSLContext | None
    ) -> None:
        connect = self.ctx.loop.create_connection(
            lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
        )
        try:
            await asyncio.wait_for(connect, self.ctx.settings.msrp.dialing.connect_timeout)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self.dialing.failed_connect(key, conn, str(exc) or type(exc).__name__)
        else:
            self.dialing.connected(conn)
        finally:
            if conn.closed:
                self.outbound.pop(key, None)

    def unlist(self) -> int:
        """Retiring: take this worker's links to next hops out of the registry, so other
        workers stop handing frames to them and the new generation opens its own; this
        worker still reuses them for what it relays itself. How many there are."""
        self.private = True
        registry = self.ctx.registry
        links = {id(c): c for c in self.ctx.conns.values() if c.outbound}
        links.update((id(c), c) for c in self.outbound.values())
        for conn in links.values():
            conn.listed = False
            if registry is not None and conn.peer_key:
                registry.unregister(conn.registry_key, conn.conid)
        return len(links)

    def forget(self, conn: MsrpConnection) -> None:
        for key, known in list(self.outbound.items()):
            if known is conn:
                del self.outbound[key]
