"""Delivery: turn a relay destination into a sink, reusing connections across workers.

Strategy (reference §6.3, DESIGN §2):
- A cmap hit names the connection id; its owner is encoded in it (slot, generation), so the
  frame goes to our own transport or over the handoff link to the owner, draining
  generations included.
- An address (set_dst, To-Path) goes to this worker's own connection to it when it has one
  (connected or still connecting; after a client's connection the script chose by set_dst),
  else is looked up in the shared connection registry, so an existing connection to that
  peer is reused whichever worker owns it. A To-Path URI finds only
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from ..protocol import Frame, MsrpUri
from ..routing.env import Destination, SendFlags
from .connenv import Resolver, RoutedConn
from .dialing import Dialed, Dialing
from .gone import Sent
from .handoff import conid_owner
from .peers import format_peer, registry_key
from .ports import Lost, Sink
from .sinks import HandoffSink, LocalSink
from .tcpdial import connect_socket
from .transports.tls import TlsReading

if TYPE_CHECKING:
    from .conn import MsrpConnection
    from .context import WorkerContext

__all__ = ["Delivery"]

logger = logging.getLogger(__name__)


class Outbound(Dialed, Protocol):
    """A connection the relay opens to a next hop (conn.MsrpConnection)."""

    conid: int
    closed: bool
    outbound: bool
    listed: bool
    peer_key: str

    @property
    def registry_key(self) -> str: ...


class Delivery(Resolver):
    def __init__(
        self,
        ctx: WorkerContext,
        client_tls: ssl.SSLContext | None,
        new_conn: Callable[[bool], Outbound],
        connect_allowed: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ctx = ctx
        # Read per relayed frame: kept here, as the uncompiled context's are dict lookups.
        self.me = (ctx.ident.slot, ctx.ident.generation)
        # The worker's connections are MsrpConnections (conn.py): typed as such, a frame's
        # reads of them are native; through the Connection Protocol each is generic (~150
        # instructions, issue 16).
        self.conns = cast("dict[int, MsrpConnection]", ctx.conns)
        self.client_tls = client_tls
        self.new_conn = new_conn
        """An outbound connection object (secure: TLS), not connected yet."""
        self.tls_reading = TlsReading()
        """The read buffer of the msrps connections it opens (transports/tls.py)."""
        self.outbound: dict[str, Outbound] = {}
        self.dialing = Dialing(
            ctx.settings.msrp.dialing, ctx.counters, ctx.conns, ctx.loop, connect_allowed
        )
        self.private = False
        """Retiring: links opened from now on stay out of the registry (retirelinks.py)."""

    def resolve(
        self,
        dest: Destination,
        flags: int,
        frame: Frame,
        origin: RoutedConn,
        lost: Lost | None = None,
    ) -> Sink | None:
        """The sink for `frame`, relayed by the route that `origin`'s frame runs, towards
        `dest`; None when there is none (flag 1 and no connection, or no TLS context).
        `lost`, when given, is called instead of the usual failure notice if a connect for
        it fails (a forwarded transaction tells its sender itself, txrelay.py)."""
        if dest.conid is not None:
            return self.for_conid(dest.conid, frame, origin, lost)
        uri = dest.uri
        if uri is None:
            return None
        if uri.proto != "tcp" and uri.proto.lower() in ("ws", "wss"):
            # Never dialled (RFC 7977 §5.2, §6): a WebSocket client is reached only over its
            # own connection, through its token.
            logger.info("relay to %s: a WebSocket URI is never dialled", uri)
            return None
        host, port = uri.address()
        key = f"{'tls' if uri.secure else 'tcp'}:{format_peer(host, port)}"
        if dest.chosen:  # the script chose the address (set_dst): a client's connection first
            sink = self._registered(registry_key(key, False), frame, origin, lost)
            if sink is not None:
                return sink
        # Then this worker's own link, before another worker's: a session's frames never
        # switch from one to the other (two workers dial a next hop at once while the registry
        # has neither), where a later frame could overtake an earlier one (RFC 4976 §3: in order).
        own = self.outbound.get(key)
        if own is not None and not own.closed:
            return self.dialing.park(own, key, frame, origin, lost)
        sink = self._registered(key, frame, origin, lost)
        if sink is not None:
            return sink
        if flags & SendFlags.REUSE_ONLY:
            logger.info("relay to %s: no connection and flag 1 forbids opening one", key)
            return None
        refused = self.dialing.refusal(key, origin.conid)
        if refused is not None:
            return self.dialing.fail_now(key, refused, frame, origin.conid, lost)
        return self._open(key, uri, host, port, frame, origin, lost)

    def _registered(
        self, known: str, frame: Frame, origin: RoutedConn, lost: Lost | None
    ) -> Sink | None:
        """The sink of the connection the shared registry lists under `known`, if any."""
        registry = self.ctx.registry
        conid = None if registry is None else registry.lookup(known)
        return None if conid is None else self.for_conid(conid, frame, origin, lost)

    def for_conid(
        self, conid: int, frame: Frame, origin: RoutedConn, lost: Lost | None = None
    ) -> Sink | None:
        owner = conid_owner(conid)
        migration = cast("MsrpConnection", origin).migration  # the connection routed from
        if owner == self.me:
            conn = self.conns.get(conid)
            migration.streak_owner = migration.move_to = None  # a streak, and a move, end
            if conn is not None and not conn.closed:
                return LocalSink(conn.out, origin, conid)
            ctx = self.ctx
            mover = ctx.mover  # moved away?
            if mover is None:
                return None
            record = Sent.of(frame, origin.conid, origin.peer_key, lost)
            return mover.sink_for(conid, record, origin)
        ctx = self.ctx
        out = ctx.handoffs
        hub = out.hub
        if hub is None:
            return None
        if migration.movable and ctx.mover is not None:
            source = self.conns.get(origin.conid)
            if source is not None:
                ctx.mover.note_remote(source, owner, conid, frame)
        path = out.path(*owner)
        record = Sent.of(frame, origin.conid, origin.peer_key, lost, path)  # for a GONE (gone.py)
        return HandoffSink(out, hub, path, conid, record, origin)

    def _open(
        self,
        key: str,
        uri: MsrpUri,
        host: str,
        port: int,
        frame: Frame,
        origin: RoutedConn,
        lost: Lost | None,
    ) -> Sink | None:
        tls = self.client_tls if uri.secure else None
        if uri.secure and tls is None:
            logger.warning("relay to %s: msrps next hop but no TLS client context", key)
            return None
        conn = self.new_conn(uri.secure)
        conn.outbound = True
        conn.listed = not self.private
        self.outbound[key] = conn
        self.dialing.started(conn, origin.conid)
        task = self.ctx.loop.create_task(self._connect(key, conn, host, port, tls))
        self.ctx.tasks.add(task)
        task.add_done_callback(self.ctx.tasks.discard)
        return self.dialing.park(conn, key, frame, origin, lost)

    async def _connect(
        self, key: str, conn: Outbound, host: str, port: int, tls: ssl.SSLContext | None
    ) -> None:
        # new_conn made an asyncio protocol (conn.MsrpConnection); Outbound names what is
        # used of it here. Over TLS it reads through the worker's shared buffer (tls.py).
        app = cast(asyncio.Protocol, conn)
        loop = self.ctx.loop
        deadline = loop.time() + self.ctx.settings.msrp.dialing.connect_timeout
        stream = None
        try:
            async with asyncio.timeout_at(deadline):
                sock = await connect_socket(loop, host, port)
            # Attached once connected, outside the deadline (tcpdial.py): its connection_made
            # flushes what is parked, which then is on its way, not lost. The TLS handshake
            # has the rest of the time (the stream's own timer: it fails the handshake
            # before the connection above ever sees it).
            if tls is not None:
                left = max(deadline - loop.time(), 0.001)
                stream = self.tls_reading.stream(app, tls, left, host)
            protocol: asyncio.Protocol = app if stream is None else stream
            await loop.create_connection(lambda: protocol, sock=sock)
            if stream is not None:
                await stream.handshaken()  # the next hop's certificate is verified
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            if stream is not None:
                stream.abort()
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
        links: dict[int, Outbound] = {id(c): c for c in self.ctx.conns.values() if c.outbound}
        links.update((id(c), c) for c in self.outbound.values())
        for conn in links.values():
            conn.listed = False
            if registry is not None and conn.peer_key:
                registry.unregister(conn.registry_key, conn.conid)
        return len(links)

    def forget(self, conn: object) -> None:
        """`conn` closed: it is no next hop any more."""
        for key, known in list(self.outbound.items()):
            if known is conn:
                del self.outbound[key]
