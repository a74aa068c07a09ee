"""ConnEnv: the worker's implementation of the script API's RouteEnv, one per connection.

Rules: the frame being routed is passed as an argument all the way (Msrp -> relay -> delivery
-> sink), never parked on a shared object. reply() writes on the connection the frame came on
(a streamed frame's once its end-line is in); relay() asks the delivery layer for a sink and
remembers it (a streamed frame's pieces follow its head). What it needs of the worker
(RouteServices, routeenv.RouteRunner) is built once and shared by every connection."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Hashable, Sized
from time import time as wall_clock  # a module global: time.time is a generic lookup
from typing import Protocol

from ..cluster.shares import Asker
from ..config.selfuri import SelfUris
from ..protocol import ConnInfo, Frame, LocalProtocolError, MsrpUri, relay_pieces
from ..protocol.splice import Spliced
from ..routing.env import Destination, HotEnv, RoutePolicy, SendFlags
from ..routing.sht import ScriptHTable
from ..routing.sip import SipRequest
from ..routing.waits import Pending
from ..shm import Cmap, Counter, StatsCounters
from ..users import Ha1Source
from . import lateasks
from .connstats import ConnStats
from .counting import TWO, count_reply, count_status
from .intake import Intake
from .limits import ConnGuard, Limited
from .migrate.state import MigrationState
from .outbox import Outbox
from .peers import source_host
from .ports import Lost, NodeLookup, Sink
from .reports import frame_report
from .sessids import new_session_id
from .sinks import send_relayed

__all__ = ["ConnEnv", "Rerouter", "Resolver", "RouteServices", "RoutedConn", "Transactor"]

logger = logging.getLogger("msrpd.route")


class RoutedConn(Protocol):
    """The connection a frame came on (conn.MsrpConnection); flow control pauses it."""

    conid: int
    closed: bool
    peer_key: str
    outbound: bool
    stats: ConnStats
    """Its counters (frames_in: which frame is being routed) and sessions."""
    migration: MigrationState
    """Colocation (migrate/colocate.py): relaying to this worker breaks a streak to another."""
    env: ConnEnv

    @property
    def info(self) -> ConnInfo: ...

    @property
    def intake(self) -> Limited:
        """Its reading side: the [limits] rates it is charged to."""

    def write_reply(self, data: bytes, close_after: bool = False) -> None: ...

    def close(self, reason: str = "closed by relay") -> None: ...

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...

    def wait_for(self, frame: Frame, pending: Pending) -> None:
        """The route needs a value for `frame` that is not here yet (routing/waits.py): the
        frame and the connection's reading wait for `pending`, then it is routed again."""


class Resolver:
    """The delivery layer (delivery.Delivery, its one subclass): a base class, not a Protocol,
    so that compiled code calls resolve() natively (issue 16: generic, ~370 instructions)."""

    def resolve(
        self,
        dest: Destination,
        flags: int,
        frame: Frame,
        origin: RoutedConn,
        lost: Lost | None = None,
    ) -> Sink | None:
        raise NotImplementedError


class Transactor(Protocol):
    """The transaction layer behind t_relay (txrelay.TxRelay)."""

    def forward(
        self,
        origin: RoutedConn,
        frame: Frame,
        basis: Frame,
        dest: Destination,
        flags: int,
        delivery: Resolver | None,
    ) -> Sink | bool: ...

    def response(self, conn: RoutedConn, frame: Frame) -> int: ...

    @property
    def refused(self) -> Sized:
        """What next hops refused with 413 lately (empty: message_refused is False)."""

    def message_refused(self, origin: RoutedConn, frame: Frame) -> bool: ...

    def out_closed(self, conn: RoutedConn) -> None:
        """`conn` closed (not moved): what went out on it is answered by nobody."""

    def continued(self, arrival: tuple[int, ...], tid: bytes, written: int) -> bytes | None: ...


class Rerouter(Protocol):
    """Routing a frame again when its next hop is us (loopback.Loopback)."""

    self_uris: SelfUris

    def refuse_loop(self, frame: Frame, conn: RoutedConn) -> bool: ...

    def reroute(self, env: ConnEnv, frame: Frame, data: bytes, depth: int) -> Sink | None: ...


class RouteServices(Protocol):
    """What a ConnEnv needs of the worker, shared by every connection (routeenv.RouteRunner)."""

    policy: RoutePolicy
    nonce_secret: bytes
    counters: StatsCounters
    users: Ha1Source | None
    delivery: Resolver | None
    loopback: Rerouter | None
    transactions: Transactor | None
    guard: ConnGuard
    """The [limits] policy (limits.py)."""
    finder: NodeLookup | None  # forwarding between nodes: the token lookups

    @property
    def cmap(self) -> Cmap | None: ...

    @property
    def htable(self) -> ScriptHTable: ...

    def run(self, frame: Frame, conn: RoutedConn, env: ConnEnv, info: ConnInfo) -> Sink | None: ...

    def run_sip(self, sip: SipRequest) -> None: ...

    def is_node(self, transport: object) -> bool:
        """Whether the connection over `transport` links this node to another of the cluster
        (its TLS certificate says so, cluster/nodecerts.py)."""


class ConnEnv(HotEnv):
    __slots__ = (
        "acked",
        "acted",
        "asks",
        "cmap_held",
        "conid",
        "conn",
        "delivery",
        "depth",
        "intake",
        "last_sink",
        "ours",
        "out",
        "routes",
        "to_uri",
    )

    def __init__(self, routes: RouteServices, conn: RoutedConn, out: Outbox, reads: Intake) -> None:
        super().__init__(wall_clock)
        self.routes = routes
        self.conn = conn
        # Read once, not per frame: through RoutedConn and RouteServices (Protocols) each read
        # is generic. The worker's delivery and cmap are fixed (the cmap read at first use).
        self.out = out
        self.intake = reads
        self.conid = conn.conid
        self.delivery: Resolver | None = routes.delivery
        self.cmap_held: Cmap | None = None
        self.last_sink: Sink | None = None
        self.acted = False
        """The route answered or relayed the frame (reset by RouteRunner.run): it can no
        longer wait for a value (user_ha1)."""
        self.acked = -1
        """conn.stats.frames_in at the route's last 2xx (report_lost): no frame outlives it."""
        self.depth = 0
        """Inner routing passes this frame has taken through our own URIs (loopback.py)."""
        self.to_uri = b""
        self.ours = False  # to_us(): the last URI asked, and its answer
        self.asks: Asker | None = None
        """Its share of the token lookups (cluster/finder.py), made at its first."""

    @property
    def policy(self) -> RoutePolicy:
        return self.routes.policy

    @property
    def cmap(self) -> Cmap | None:
        cmap = self.cmap_held
        if cmap is None:
            cmap = self.cmap_held = self.routes.cmap
        return cmap

    @property
    def nonce_secret(self) -> bytes:
        return self.routes.nonce_secret

    @property
    def self_uris(self) -> SelfUris | None:
        loopback = self.routes.loopback
        return None if loopback is None else loopback.self_uris

    def to_us(self, uri: bytes) -> bool:
        if uri != self.to_uri:
            loopback = self.routes.loopback
            self.ours = loopback is not None and loopback.self_uris.names(uri)
            self.to_uri = uri
        return self.ours

    def nonce_salt(self) -> bytes:
        return secrets.token_bytes(4)

    def new_session_id(self) -> str:
        return new_session_id()

    @property
    def htable(self) -> ScriptHTable:
        return self.routes.htable

    @property
    def has_user_store(self) -> bool:
        return self.routes.users is not None

    def user_ha1(self, username: str, realm: str) -> str | None:
        """May raise NotYet or Unavailable (routing/waits.py): a remote store (users/)."""
        return lateasks.ha1_of(self.routes.users, username, realm, self.acted, self.conn.peer_key)

    def node_of(self, sessid: str) -> MsrpUri | None:
        """May raise NotYet (routing/waits.py): the cluster agent is being asked."""
        if (finder := self.routes.finder) is None:
            return None
        return lateasks.node_of(finder, sessid, self.asking(), self.acted)

    def asking(self) -> Asker:
        """The connection's share of the token lookups (an inner hop's env shares it)."""
        asker = self.asks
        if asker is None:
            peer = self.conn.peer_key
            asker = self.asks = Asker(peer, source_host(peer))
        return asker

    def write_origin(self, data: bytes, flags: int, status: int = 0) -> None:
        self.acted = True
        out = self.out  # its stats and tally are the connection's and the worker's
        if status:
            two = count_status(out.tally, status) == 2
        else:
            two = count_reply(self.routes.counters, data) == TWO
        if two:
            self.acked = out.stats.frames_in
        self.answer(data, bool(flags & SendFlags.CLOSE_AFTER))

    def answer(self, data: bytes, close_after: bool = False) -> None:
        """conn.write_reply: now, or once a streamed frame's end-line is in (RFC 4976 §6.4.1)."""
        held = self.intake.held_replies
        if held is not None:
            held.append((data, close_after))
        else:
            self.out.write_frame(data, close_after)

    def close_origin(self, reason: str) -> None:
        logger.info("closing %s: %s", self.conn.peer_key, reason)
        self.conn.close(reason)

    def report_lost(self, frame: Frame, code: int, reason: str) -> None:
        """`frame` will not be delivered: answered 2xx already, its sender gets a failure
        REPORT if it asked (RFC 4976 §6.4.1); otherwise the route's own answer tells it."""
        if self.acked != self.out.stats.frames_in:
            return
        report = frame_report(frame, code, reason)
        if report is not None:
            self.answer(report)

    def relay(self, frame: Frame, data: bytes | Spliced, dest: Destination, flags: int) -> int:
        self.acted = True
        routes, uri = self.routes, dest.uri
        loopback = routes.loopback
        if loopback is not None and uri is not None and loopback.self_uris.matches(uri):
            # The next hop is us: route it again here, no connection (loopback.py).
            whole = data if isinstance(data, bytes) else data.joined()
            sink = loopback.reroute(self, frame, whole, self.depth + 1)
            self.last_sink = sink
            return -1 if sink is None else 1
        delivery = self.delivery
        sink = None if delivery is None else delivery.resolve(dest, flags, frame, self.conn)
        if sink is None:
            if frame.method is None:
                # A response for a frame we forwarded (its To-Path names more hops): it goes
                # back only on a connection the relay opened; a client's is not found by
                # address (issue 12), and the SEND got our hop-by-hop 200 (RFC 4976 §6.4.1).
                routes.counters.add(Counter.responses_dropped)
                logger.info("response %s dropped: no connection to %s", _tid(frame), dest.uri)
                return -1
            routes.counters.add(Counter.relay_fail)
            logger.info(
                "relay of %s failed: no way to %s", _tid(frame), dest.uri or f"{dest.conid:x}"
            )
            self.report_lost(frame, 408 if dest.conid is None else 481, "Not Delivered")
            return -1
        streamed = frame.streamed
        close_after = bool(flags & SendFlags.CLOSE_AFTER) and not streamed
        if not send_relayed(sink, data, self.conid, streamed, close_after):
            routes.counters.add(Counter.relay_fail)
            logger.info("relay of %s failed: the destination connection is closed", _tid(frame))
            self.report_lost(frame, 481, "Session Does Not Exist")
            return -1
        self.out.tally.frames_out += 1
        self.last_sink = sink
        if dest.node:
            routes.counters.add(Counter.cluster_forwarded)
        if dest.conid is not None or dest.node:
            self.proven()
        return 1

    def message_refused(self, frame: Frame) -> bool:
        tx = self.routes.transactions  # none refused: the usual case, without a call
        return tx is not None and bool(tx.refused) and tx.message_refused(self.conn, frame)

    def t_relay(
        self, frame: Frame, dest: Destination, flags: int, basis: Frame | None = None
    ) -> int:
        """t_relay (txrelay.py): a response is matched to its transaction; a request is
        forwarded under a new transaction id, `basis` being what its sender sent (default:
        `frame`). A next hop of ours is routed again here first (loopback.py), where the
        inner pass forwards it. 1 on its way; -2 not forwarded and its sender told (or owed
        nothing), -1 not."""
        self.acted = True
        routes, uri = self.routes, dest.uri
        tx = routes.transactions
        if frame.method is None:
            return -1 if tx is None else tx.response(self.conn, frame)
        loopback = routes.loopback
        ours = loopback is not None and uri is not None and loopback.self_uris.matches(uri)
        if tx is None or ours:
            try:
                data = relay_pieces(frame)
            except LocalProtocolError:
                return -1
            return self.relay(frame, data, dest, flags)
        if (dest.conid is not None or dest.node) and not self.out.stats.proven:
            self.proven()
        sink = tx.forward(self.conn, frame, basis or frame, dest, flags, self.delivery)
        if isinstance(sink, bool):
            self.last_sink = None
            return -2 if sink else -1
        self.last_sink = sink
        if dest.node:
            routes.counters.add(Counter.cluster_forwarded)
        return 1

    def proven(self) -> None:
        """A frame this connection sent was relayed through a token (the route found the
        token's connection, dest.conid, or the node holding it; t_relay too): it is off
        probation ([limits])."""
        stats = self.out.stats
        if not stats.proven:
            self.routes.guard.settled(self.conid, stats)

    def auth_done(self, ok: bool, fault: bool = False) -> None:
        self.routes.counters.add(Counter.auth_ok if ok else Counter.auth_fail)
        if fault:
            self.routes.guard.auth_failed(self.conn)

    def claim_session(self, user: str, sessid: str) -> tuple[int, str] | None:
        return self.routes.guard.claim_session(user, sessid)

    def session_saved(self, sessid: str, user: str = "") -> None:
        stats = self.conn.stats
        stats.sessions.append(sessid)
        stats.session_meta[sessid] = (user, wall_clock())
        self.proven()
        self.routes.guard.user_session(self.conn, user)


def _tid(frame: Frame) -> str:
    return frame.tid.decode(errors="replace")
