"""Route running: the per-frame call into the routing script (RouteRunner).

Rules: RouteRunner holds what the script needs from the worker (its policy, the shared
tables, the user store, the delivery layer), built once and shared by every connection; each
connection's ConnEnv (connenv.py) is the `env` the script's `msrp` object calls. A script
error never takes the worker down. A value the route needs that is not here yet parks the
frame on its connection (NotYet, routing/waits.py; conn.wait_for); one that cannot be had
(Unavailable) gets the request a 500.
"""

from __future__ import annotations

import logging
import time

from ..protocol import ConnInfo, Frame, ReaderLimits, Status, build_reply
from ..routing import Msrp, RouteScript
from ..routing.env import RoutePolicy
from ..routing.sht import ScriptHTable
from ..routing.sip import SipRequest
from ..routing.waits import NotYet, Unavailable
from ..shm import Cmap, Counter, ShmSet, StatsCounters
from ..users import Ha1Source
from .connenv import ConnEnv, Rerouter, Resolver, RoutedConn, Transactor
from .limits import ConnGuard
from .loopback import MAX_SELF_IN_PATH
from .ports import NodeCheck, NodeLookup, Sink

__all__ = ["RouteRunner"]

logger = logging.getLogger("msrpd.route")


class RouteRunner:
    """The routing script and what it needs from the worker, shared by every connection."""

    __slots__ = (
        "_htable",
        "counters",
        "delivery",
        "event",
        "finder",
        "guard",
        "limits",
        "loopback",
        "node_certs",
        "nonce_secret",
        "policy",
        "route",
        "shm",
        "transactions",
        "users",
    )

    def __init__(
        self,
        route: RouteScript,
        policy: RoutePolicy,
        nonce_secret: bytes,
        shm: ShmSet,
        counters: StatsCounters,
        limits: ReaderLimits,
        guard: ConnGuard,
        *,
        delivery: Resolver | None = None,
        loopback: Rerouter | None = None,
        users: Ha1Source | None = None,
        transactions: Transactor | None = None,
        finder: NodeLookup | None = None,
        node_certs: NodeCheck | None = None,
    ) -> None:
        self.route = route
        self.event = route.event
        """The script's callback, read once: RouteScript is an interpreted dataclass, and
        each frame would look it up by name."""
        self.policy = policy
        self.nonce_secret = nonce_secret
        self.shm = shm
        self.counters = counters
        self.limits = limits
        self.guard = guard
        """The [limits] policy every connection answers to (limits.py)."""
        self.delivery = delivery
        self.loopback = loopback
        self.users = users
        self.transactions = transactions
        self.finder = finder
        """Forwarding between nodes (cluster/finder.py): which node holds a token."""
        self.node_certs = node_certs
        """Forwarding between nodes (cluster/nodecerts.py): which TLS peers are nodes."""
        self._htable: ScriptHTable | None = None  # built once, on first use (htable scripts)

    @property
    def cmap(self) -> Cmap | None:
        return self.shm.cmap

    @property
    def htable(self) -> ScriptHTable:
        if self._htable is None:
            self._htable = ScriptHTable(self.shm.htable, time.time)
        return self._htable

    def run(self, frame: Frame, conn: RoutedConn, env: ConnEnv, info: ConnInfo) -> Sink | None:
        """Run the script's event callback on `frame`; the sink relay() used, if any. A path
        looping through us is answered here and never routed (loopback.py). `env` and `info`
        are `conn`'s, read by the caller, which holds it natively (through RoutedConn each
        read is a generic lookup)."""
        env.last_sink = None
        env.acted = False
        # The usual frame names us at most MAX_SELF_IN_PATH times: asked here, natively,
        # it needs no call through the Rerouter protocol (a generic one).
        loopback = self.loopback
        if (
            loopback is not None
            and frame.to_count > MAX_SELF_IN_PATH
            and loopback.refuse_loop(frame, conn)
        ):
            return None
        try:
            self.event(Msrp(frame, info, env))
        except NotYet as wait:
            conn.wait_for(frame, wait.pending)  # routed again from the start when it lands
            return None
        except Unavailable as exc:
            # Logged where it failed, once per outage (users/remote.py): not per frame. A
            # route that relayed or answered before asking is answered already (connenv.py).
            if not env.acted:
                _server_error(frame, conn, f"Server Error ({exc.what} unavailable)")
        except Exception:
            # A script bug must not take the worker down: log with the tid, answer 500 to a
            # request, drop a response (issue 5; Kamailio drops silently).
            logger.exception("route failed on frame %s from %s", frame.tid.decode(), conn.peer_key)
            self.counters.add(Counter.errors)
            _server_error(frame, conn, "Server Error (route failed)")
        return _last_sink(env)

    def is_node(self, transport: object) -> bool:
        certs = self.node_certs
        return certs is not None and certs.is_node(transport)

    def run_sip(self, sip: SipRequest) -> None:
        """The script's request_route(sip), or the default stateless 403 No SIP Here."""
        handler = self.route.sip
        if handler is None:
            sip.reply(403, "No SIP Here")
            return
        try:
            handler(sip)
        except Exception:
            logger.exception("request_route failed on %r", sip.first_line)
            self.counters.add(Counter.errors)
            sip.reply(500, "Server Error")


def _server_error(frame: Frame, conn: RoutedConn, text: str) -> None:
    """Answer a request 500 `text` (no RFC 4975 §10 code: a non-200 like any other to its
    sender, rfc-checklist §4.1); never a response or a REPORT, nor a request whose
    Failure-Report is no (RFC 4975 §7.1.4)."""
    if frame.method is None or frame.method == b"REPORT" or frame.failure_report == b"no":
        return
    conn.write_reply(build_reply(frame, Status.SERVER_ERROR, text))


def _last_sink(env: ConnEnv) -> Sink | None:
    """What relay() set during the route: read here, since in `run` mypy keeps it narrowed
    to the None set before the route (and compiled code checks that type)."""
    return env.last_sink
