"""ConnGuard (workers/limits.py) on its own: real shared tables, connections and loop stood in
for, so each rule is checked by itself (the live tests are tests/integration/test_limits.py)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable
from typing import Any

from msrpd.config import LimitsSettings
from msrpd.protocol import ConnInfo
from msrpd.shm import AddrTable, Cmap, CmapEntry, Counter, StatsCounters, UserSessions
from msrpd.workers.connstats import ConnStats
from msrpd.workers.intake import RATE
from msrpd.workers.limits import FORBIDDEN_SESSIONS, ConnGuard
from msrpd.workers.migrate.state import MigrationState
from msrpd.workers.ratelimit import ReadRate


class Intake:
    def __init__(self) -> None:
        self.rate: ReadRate | None = None
        self.halted = 0


@dataclasses.dataclass(eq=False)
class Conn:
    conid: int
    peer_key: str = "tcp:192.0.2.1:40000"
    outbound: bool = False
    stats: ConnStats = dataclasses.field(default_factory=ConnStats)
    migration: MigrationState = dataclasses.field(default_factory=MigrationState)
    intake: Intake = dataclasses.field(default_factory=Intake)
    closed: str = ""
    blocked: set[Hashable] = dataclasses.field(default_factory=set)
    drained: int = 0
    info: ConnInfo = dataclasses.field(
        default_factory=lambda: ConnInfo("msrp://192.0.2.1:40000", "tcp:127.0.0.1:2855", None)
    )

    def close(self, reason: str = "closed by relay") -> None:
        self.closed = reason

    def block(self, dest: Hashable) -> None:
        self.blocked.add(dest)

    def unblock(self, dest: Hashable) -> None:
        self.blocked.discard(dest)

    def read_buffered(self) -> None:
        self.drained += 1


class Loop:
    def __init__(self) -> None:
        self.soon: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.later: list[tuple[float, Callable[..., Any], tuple[Any, ...]]] = []

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.soon.append((fn, args))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.later.append((delay, fn, args))


def charge_frame(g: ConnGuard, conn: Conn, rate: ReadRate) -> None:
    """A frame read on `conn`, charged as conn.py does: the buckets, then the guard on debt."""
    now = time.monotonic()
    debt = rate.charge_frame(now)
    if debt:
        g.throttle(conn, rate, now, debt)


def guard(tables: tuple[AddrTable, UserSessions, Cmap], **limits: Any) -> tuple[ConnGuard, Loop]:
    loop = Loop()
    addrs, users, cmap = tables
    settings = LimitsSettings(**limits)
    return ConnGuard(settings, 2, 0, addrs, users, cmap, StatsCounters(), loop), loop  # type: ignore[arg-type]


def test_probation_closes_only_the_unproven_once_due(tables) -> None:  # type: ignore[no-untyped-def]
    g, _ = guard(tables, probation=30.0)
    silent, authed, proven = Conn(1), Conn(2), Conn(3)
    for conn in (silent, authed, proven):
        assert g.admit(conn)
        conn.stats.opened = 100.0
    authed.stats.sessions.append("s1")
    g.settled(authed.conid, authed.stats)
    g.settled(proven.conid, proven.stats)
    g.tick(129.9)
    assert not silent.closed
    g.tick(130.0)
    assert silent.closed.startswith("probation")
    assert not authed.closed and not proven.closed
    assert g.counters.values[Counter.limit_probation] == 1
    assert g.addrs.conns("*") == 0  # the relay's probation count went back to zero


def test_a_moved_connection_keeps_its_probation_and_is_never_refused(tables) -> None:  # type: ignore[no-untyped-def]
    g, _ = guard(tables, max_unauth_conns=1, max_conns_per_addr=1)
    assert g.admit(Conn(1))
    assert not g.admit(Conn(2))  # over both limits
    moved = Conn(3, migration=MigrationState(moves=1))
    assert g.admit(moved) and not moved.closed  # admitted where it was accepted
    assert moved.conid in g.on_probation
    proven = Conn(4, migration=MigrationState(moves=1))
    proven.stats.proven = True
    assert g.admit(proven) and proven.conid not in g.on_probation
    assert g.admit(Conn(5, outbound=True))  # the relay's own: never limited


def test_the_nth_auth_failure_closes_after_the_response(tables) -> None:  # type: ignore[no-untyped-def]
    g, loop = guard(tables, auth_failures_close=3, ban_after=0)
    conn = Conn(1)
    g.auth_failed(conn)
    g.auth_failed(conn)
    assert loop.soon == [] and conn.stats.auth_failures == 2
    g.auth_failed(conn)
    assert loop.soon == [(conn.close, ("3 failed AUTHs",))]  # after this read's writes
    assert not conn.closed
    relay_link = Conn(2, outbound=True)
    for _ in range(5):
        g.auth_failed(relay_link)
    assert relay_link.stats.auth_failures == 0 and len(loop.soon) == 1


def test_sessions_per_user(tables) -> None:  # type: ignore[no-untyped-def]
    g, _ = guard(tables, max_sessions_per_user=1)
    assert g.claim_session("alice", "s1") is None
    cmap = tables[2]
    cmap.save(CmapEntry("s1", 1, "", "", "", 4e9))
    assert g.claim_session("alice", "s2") == FORBIDDEN_SESSIONS
    assert g.claim_session("", "s3") is None  # no user name: nothing to count by
    cmap.delete("s1")
    assert g.claim_session("alice", "s2") is None


def test_a_link_from_another_node_is_not_held_to_session_rates(tables) -> None:  # type: ignore[no-untyped-def]
    """It carries many sessions' frames, each held on its own node (cluster/nodecerts.py)."""
    g, _ = guard(tables, session_frame_rate=10.0, session_byte_rate=1000)
    node = Conn(1, info=ConnInfo("msrps://192.0.2.2:40000", "tls:127.0.0.1:2856", 1, node=True))
    client = Conn(2, info=ConnInfo("msrps://192.0.2.1:40000", "tls:127.0.0.1:2856", 2))
    assert g.admit(node) and g.admit(client)
    assert node.intake.rate is None
    assert client.intake.rate is not None


def test_a_throttled_connection_resumes_once_out_of_debt(tables) -> None:  # type: ignore[no-untyped-def]
    g, loop = guard(tables, session_frame_rate=10.0, session_byte_rate=0, rate_burst=0.2)
    conn = Conn(1)
    assert g.admit(conn)
    rate = conn.intake.rate
    assert rate is not None and rate.bytes is None
    charge_frame(g, conn, rate)
    charge_frame(g, conn, rate)
    assert conn.intake.halted == 0
    charge_frame(g, conn, rate)  # the third of a burst of 2
    assert conn.intake.halted == RATE and conn.blocked == {rate}
    charge_frame(g, conn, rate)  # already throttled: one timer
    assert len(loop.later) == 1
    assert g.counters.values[Counter.limit_rate] == 1
    delay, fn, args = loop.later.pop()
    assert 0.1 < delay < 0.25
    assert rate.frames is not None
    rate.frames.tokens = 0.0  # as if the debt were paid
    fn(*args)
    assert conn.intake.halted == 0 and conn.blocked == set() and conn.drained == 1
