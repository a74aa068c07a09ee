"""ConnGuard: the [limits] policy of one worker, for connections clients open (issue 14 item 3;
rfc-checklist §3.7, §4.4, §5.5). It is connection and worker policy: it holds whatever route
runs. Connections the relay opens to next hops are never limited.

Rules (what a client over each limit gets is a close or a response, never a silent drop):
- At accept, before anything is read (admit): a banned source address, or one with
  max_conns_per_addr connections open over every worker, or max_unauth_conns connections
  on probation in the whole relay (shm/addrs.py counts both, each worker's share of the
  latter apart, for when it dies): the connection is closed at once.
  A connection that moved here from another worker was admitted there: only its probation
  and its rates follow it.
- Probation (RFC 4976 §6.1): a connection that has neither a session of its own (a
  successful AUTH) nor had a frame relayed through a token (ConnEnv marks it proven) within
  `probation` seconds of its accept is closed by the tick. The connections on probation are
  kept apart, so the tick never walks the others.
- AUTH failures (a 401 to an AUTH with credentials from the client itself: not for a stale
  nonce, nor one another relay forwarded, whose connection is not closed; RFC 4976 §6.3):
  the auth_failures_close-th closes the connection once the 401 is written (the close runs
  after the read's writes are flushed); each also counts for its source address, and
  ban_after of them within ban_window ban it for ban_time on every worker. With a cluster,
  each is also reported to the node's cluster agent, which counts it over every node and
  bans the address on all of them (cluster/bans.py).
- max_sessions_per_user: a claim in shm/usersess.py, over every worker, its limit lowered by
  the user's sessions on the other nodes of a cluster (shm/remoteusers.py, as of the last
  heartbeat); the AUTH beyond it is answered 403 by the route API (routing/cmapops.py).
  User rates count sessions by the same claims, so with them on a session is claimed even
  when the quota is off (then never refused).
- max_outbound_per_second: each worker takes an equal share of the relay's rate (a bucket
  of its own, no shared memory on the dialling path); a connect over it is not made and the
  frame fails as an unreachable next hop does (dialing.py).
- Session rates: a client connection that sends faster than session_frame_rate frames or
  session_byte_rate bytes a second (with rate_burst seconds of burst) is throttled: the
  frame that took the last token is routed, the ones after it in the same read wait in the
  reader, and the socket is not read (back-pressure through Intake, as a congested
  destination does) until its buckets are out of debt; nothing is dropped. One timer per
  throttling, none per frame. User rates (userrate.py) add the user's buckets to the
  connection's, with the same outcome. Not a link from another node of the cluster
  (ConnInfo.node, cluster/nodecerts.py): it carries the frames of many sessions, each held
  on its own node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import Protocol

from ..cluster.report import FailureReport
from ..config import LimitsSettings
from ..protocol import ConnInfo
from ..shm import (
    PROBATION,
    AddrTable,
    Admission,
    BanRule,
    Claim,
    Cmap,
    Counter,
    RemoteUsers,
    StatsCounters,
    UserSessions,
    probation_key,
)
from ..shm.usersess import MAX_SLOTS
from .connstats import ConnStats
from .intake import RATE
from .migrate.state import MigrationState
from .peers import source_host
from .ratelimit import USER_DEBT, ReadRate, bucket
from .userrate import UserRates

__all__ = ["FORBIDDEN_SESSIONS", "Charged", "ConnGuard", "Failing", "Guarded", "Limited"]

logger = logging.getLogger(__name__)

THROTTLE_SLACK = 0.02
"""Seconds a throttled connection waits past its debt: a few frames' worth of tokens come
in, so a sender held at its rate costs at most 50 timers a second, not one per frame."""
FORBIDDEN_SESSIONS = (403, "Forbidden (too many sessions for this user)")
NO_ROOM = (500, "Server Error (session table full)")


class Limited(Protocol):
    """What the limits need of the reading side of a connection (intake.Intake)."""

    rate: ReadRate | None
    halted: int
    """intake.RATE while throttled (and intake.WAIT while a frame waits for a value)."""


class Failing(Protocol):
    """A connection an AUTH failed on (conn.MsrpConnection, as connenv.RoutedConn)."""

    peer_key: str
    outbound: bool
    stats: ConnStats

    def close(self, reason: str = "closed by relay") -> None: ...


class Charged(Protocol):
    """A connection charged to a user's rates (conn.MsrpConnection, as connenv.RoutedConn)."""

    conid: int
    outbound: bool

    @property
    def intake(self) -> Limited: ...


class Guarded(Protocol):
    """A connection the limits watch (conn.MsrpConnection)."""

    conid: int
    peer_key: str
    outbound: bool
    stats: ConnStats
    migration: MigrationState

    @property
    def info(self) -> ConnInfo: ...

    @property
    def intake(self) -> Limited: ...

    def close(self, reason: str = "closed by relay") -> None: ...

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...

    def read_buffered(self) -> None: ...


class ConnGuard:
    def __init__(
        self,
        limits: LimitsSettings,
        children: int,
        index: int,
        addrs: AddrTable,
        users: UserSessions,
        cmap: Cmap,
        counters: StatsCounters,
        loop: asyncio.AbstractEventLoop,
        report: FailureReport | None = None,
        remote: RemoteUsers | None = None,
    ) -> None:
        """`report`: tells the cluster agent of each failed AUTH's address (cluster/report.py);
        `remote`: the users' sessions on the other nodes; both None without a cluster."""
        self.limits = limits
        self.report = report
        self.addrs = addrs
        self.users = users
        self.cmap = cmap
        self.remote = remote
        self.user_rates = UserRates(limits, users, cmap, remote)
        self.counters = counters
        self.loop = loop
        self.ban = BanRule(limits.ban_after, limits.ban_window, limits.ban_time)
        self.share = probation_key(index)
        """This worker's count of connections on probation in `addrs` (max_unauth_conns)."""
        self.on_probation: dict[int, Guarded] = {}
        """Connections neither authenticated nor proven, by id, in the order they came."""
        rate = limits.max_outbound_per_second / children
        self.outbound = bucket(rate, 1.0, time.monotonic())

    # -- a connection's life -----------------------------------------------------------------

    def admit(self, conn: Guarded) -> bool:
        """A connection starts here (accepted, passed, moved): False when it was closed."""
        if conn.outbound:
            return True
        stats, moved = conn.stats, conn.migration.moves > 0
        refusal = None if moved else self._refusal(conn)
        if refusal is None and not (stats.proven or stats.sessions):
            # A connection moved here was admitted where it came from: counted, not refused.
            if self._enter_probation(0 if moved else self.limits.max_unauth_conns):
                self.on_probation[conn.conid] = conn
            else:
                refusal = Counter.limit_unauth_conns, "too many unauthenticated connections"
        if refusal is not None:
            counter, why = refusal
            self.counters.add(counter)
            logger.info("closing %s at accept: %s", conn.peer_key, why)
            conn.close(why)
            return False
        if conn.info.node:  # a link from another node carries many sessions' frames
            conn.intake.rate = None  # the rates are a client's
            return True
        conn.intake.rate = self._read_rate()
        if moved and stats.session_meta:  # its user's rate follows it
            self.user_session(conn, next(iter(stats.session_meta.values()))[0])
        if moved:
            self._carry_levels(conn, stats.rate_levels)
        return True

    def _carry_levels(self, conn: Guarded, levels: tuple[float | None, ...]) -> None:
        """A moved connection's new buckets start from the levels its old ones had (not full:
        a move is no fresh burst); its user's only if it is the user's first connection here
        (the others' share has a level of its own)."""
        rate, conn.stats.rate_levels = conn.intake.rate, ()
        if rate is None or len(levels) != 4:
            return
        now, own = time.monotonic(), (rate.frames, rate.bytes)
        users = (rate.user_frames, rate.user_bytes)
        if not self.user_rates.alone(conn.conid):
            users = (None, None)
        for held, level in zip((*own, *users), levels, strict=True):
            if held is not None and level is not None:
                held.lower_to(level, now)

    def _enter_probation(self, limit: int) -> bool:
        """Count one more connection on probation, unless the relay has `limit` (0: none)."""
        if not self.limits.max_unauth_conns:
            return True
        addrs, now = self.addrs, time.time()
        if addrs.open_conn(PROBATION, limit, now) is Admission.FULL:
            return False
        addrs.open_conn(self.share, 0, now)
        return True

    def _leave_probation(self, conid: int) -> None:
        if self.on_probation.pop(conid, None) is not None and self.limits.max_unauth_conns:
            now = time.time()
            self.addrs.release(PROBATION, 1, now)
            self.addrs.release(self.share, 1, now)

    def _refusal(self, conn: Guarded) -> tuple[Counter, str] | None:
        limits, now = self.limits, time.time()
        if not (limits.max_conns_per_addr or limits.ban_after):
            return None
        verdict = self.addrs.open_conn(source_host(conn.peer_key), limits.max_conns_per_addr, now)
        if verdict is Admission.BANNED:
            return Counter.limit_banned, "address banned after failed AUTHs"
        if verdict is Admission.FULL:
            return Counter.limit_addr_conns, "too many connections from this address"
        conn.stats.counted = verdict is Admission.COUNTED
        return None

    def _read_rate(self) -> ReadRate | None:
        limits, now = self.limits, time.monotonic()
        frames, octets, burst = (
            limits.session_frame_rate,
            limits.session_byte_rate,
            limits.rate_burst,
        )
        if not (frames or octets):
            return None
        return ReadRate(bucket(frames, burst, now), bucket(octets, burst, now))

    def user_session(self, conn: Charged, user: str) -> None:
        """`conn` holds a session of `user` now: charged to the user's rates, if on."""
        rates = self.user_rates
        if conn.outbound or not rates.on:
            return
        intake = conn.intake
        if intake.rate is None:
            intake.rate = ReadRate(None, None)
        rates.attach(conn.conid, user, intake.rate, time.monotonic(), time.time())

    def closed(self, conn: Guarded) -> None:
        """The connection closed here, or moved to another worker (passed): its probation
        goes on there, and its source address's count with it."""
        self._leave_probation(conn.conid)
        self.user_rates.detach(conn.conid)
        if conn.stats.counted and not conn.migration.passed:
            conn.stats.counted = False
            self.addrs.close_conn(source_host(conn.peer_key), time.time())

    def settled(self, conid: int, stats: ConnStats) -> None:
        """Connection `conid` authenticated, or a frame of its was relayed through a token:
        off probation."""
        stats.proven = True
        self._leave_probation(conid)

    def tick(self, now: float) -> None:
        """Close the connections whose probation is over, refresh the users' rate shares
        (worker.py, once a second)."""
        if self.user_rates.shares:
            self.user_rates.tick(now, time.time())
        deadline = now - self.limits.probation
        over = [c for c in self.on_probation.values() if c.stats.opened <= deadline]
        for conn in over:
            self._leave_probation(conn.conid)
            self.counters.add(Counter.limit_probation)
            logger.info("closing %s: no AUTH and nothing relayed within probation", conn.peer_key)
            conn.close(f"probation: no AUTH within {self.limits.probation:g} s")

    # -- reading -------------------------------------------------------------------------------

    def throttle(self, conn: Guarded, rate: ReadRate, now: float, debt: int) -> None:
        """A read or a frame of `conn` put its buckets in `debt` (ReadRate.charge_read,
        charge_frame: conn.py charges them itself, compiled, and calls this only then): stop
        routing and reading until the debt is paid (one timer)."""
        intake = conn.intake
        if intake.halted & RATE:
            return  # the timer set already looks at the debt again when it fires
        intake.halted |= RATE
        self.counters.add(Counter.limit_user_rate if debt == USER_DEBT else Counter.limit_rate)
        conn.block(rate)
        self.loop.call_later(rate.debt(now) + THROTTLE_SLACK, self._resume, conn, rate)

    def _resume(self, conn: Guarded, rate: ReadRate) -> None:
        wait = rate.debt(time.monotonic())
        if wait > 0:
            self.loop.call_later(wait + THROTTLE_SLACK, self._resume, conn, rate)
            return
        conn.intake.halted &= ~RATE
        conn.unblock(rate)
        conn.read_buffered()  # the frames the throttled read left in the reader (unless halted)

    def close(self) -> None:
        """At the worker's exit: the report socket goes."""
        if self.report is not None:
            self.report.close()

    # -- AUTH ----------------------------------------------------------------------------------

    def auth_failed(self, conn: Failing) -> None:
        """A 401 is going to `conn` for wrong credentials of the client itself (the route API
        leaves out stale nonces and AUTHs another relay forwarded)."""
        if conn.outbound:
            return
        stats, limits = conn.stats, self.limits
        stats.auth_failures += 1
        host = source_host(conn.peer_key)
        if self.ban.after and self.report is not None:
            self.report.auth_failed(host)  # counted over the cluster too (cluster/bans.py)
        if self.ban.after and self.addrs.auth_failed(host, self.ban, time.time()):
            self.counters.add(Counter.limit_bans)
            logger.warning(
                "banning %s for %g s: %d failed AUTHs", host, limits.ban_time, limits.ban_after
            )
        if limits.auth_failures_close and stats.auth_failures >= limits.auth_failures_close:
            self.counters.add(Counter.limit_auth_failures)
            logger.info("closing %s: %d failed AUTHs", conn.peer_key, stats.auth_failures)
            # After this read's writes (the 401) are flushed (conn.data_received).
            self.loop.call_soon(conn.close, f"{stats.auth_failures} failed AUTHs")

    def claim_session(self, user: str, sessid: str) -> tuple[int, str] | None:
        """None when `user` may hold session `sessid`; else the status and reason to answer.
        With the quota off and user rates on, the session is still claimed (the rates share by
        the claims) as far as the table holds, and never refused."""
        limit = self.limits.max_sessions_per_user
        if not (limit or self.user_rates.on) or not user:
            return None
        now = time.time()
        room = limit or MAX_SLOTS
        if limit and self.remote is not None:  # the user's sessions on the other nodes
            room -= self.remote.sessions(user, now)
        claim = self.users.claim(user, sessid, room, lambda s: self.cmap.lookup(s, now) is not None)
        if claim is Claim.GRANTED or not limit:
            return None
        self.counters.add(Counter.limit_user_sessions)
        logger.info("AUTH of %r refused: %s", user, claim.value)
        return FORBIDDEN_SESSIONS if claim is Claim.AT_LIMIT else NO_ROOM

    # -- next hops -----------------------------------------------------------------------------

    def connect_allowed(self) -> bool:
        """A connect to a next hop may start now (max_outbound_per_second)."""
        if self.outbound is None or self.outbound.allow(time.monotonic()):
            return True
        self.counters.add(Counter.limit_outbound)
        return False
