"""User rates (workers/userrate.py, through ConnGuard): the user's buckets shared by its
connections on a worker, its rate divided among its sessions over the cluster (real shared
tables: the cmap, UserSessions, RemoteUsers; connections and loop stood in for)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.config import LimitsSettings
from msrpd.shm import AddrTable, Cmap, CmapEntry, Counter, RemoteUsers, StatsCounters, UserSessions
from msrpd.shm.usersess import MAX_SLOTS, user_key
from msrpd.workers.intake import RATE
from msrpd.workers.limits import ConnGuard
from msrpd.workers.migrate.state import MigrationState
from msrpd.workers.ratelimit import ReadRate, TokenBucket

from .test_limits import Conn, Loop, charge_frame

LIMITS = LimitsSettings(
    user_frame_rate=2.0, session_frame_rate=0, session_byte_rate=0, rate_burst=5.0
)


@pytest.fixture
def remote(prefix: str, tmp_path: Path) -> Iterator[RemoteUsers]:
    table = RemoteUsers.create(prefix, tmp_path / "r.lock", 2, 16)
    try:
        yield table
    finally:
        table.close()
        table.unlink()


def _session(g: ConnGuard, cmap: Cmap, conn: Conn, user: str, sessid: str) -> ReadRate:
    assert g.claim_session(user, sessid) is None
    assert cmap.save(CmapEntry(sessid, conn.conid, "", "", "", 4e9))
    g.user_session(conn, user)
    rate = conn.intake.rate
    assert rate is not None
    return rate


def _bucket(rate: ReadRate) -> TokenBucket:
    assert rate.user_frames is not None
    return rate.user_frames


def test_a_users_rate_is_shared_among_its_sessions_over_the_cluster(
    tables: tuple[AddrTable, UserSessions, Cmap], remote: RemoteUsers
) -> None:
    addrs, users, cmap = tables
    loop = Loop()
    counters = StatsCounters()
    g = ConnGuard(LIMITS, 2, 0, addrs, users, cmap, counters, loop, None, remote)  # type: ignore[arg-type]
    a, b, c = Conn(1), Conn(2), Conn(3)
    for conn in (a, b, c):
        assert g.admit(conn)
        assert conn.intake.rate is None  # session rates off
    ra, rb = _session(g, cmap, a, "alice", "s1"), _session(g, cmap, b, "alice", "s2")
    rc = _session(g, cmap, c, "bob", "s3")
    assert ra.frames is None and ra.user_bytes is None  # only what is on
    assert _bucket(ra) is _bucket(rb) and _bucket(rc) is not _bucket(ra)
    assert _bucket(ra).rate == 2.0  # both of alice's sessions are here
    remote.replace({user_key("alice"): 2}, time.time() + 5)  # two more on other nodes
    g.tick(time.monotonic())
    assert _bucket(ra).rate == 1.0 and _bucket(ra).burst == 5.0  # 2 of her 4 sessions
    assert _bucket(rc).rate == 2.0  # bob's are his own
    for _ in range(5):  # the burst, over both of alice's connections here
        charge_frame(g, a if _ % 2 else b, ra if _ % 2 else rb)
    assert a.intake.halted == b.intake.halted == 0
    charge_frame(g, b, rb)  # one more: the user's bucket is in debt
    assert b.intake.halted == RATE and b.blocked == {rb} and a.intake.halted == 0
    assert (counters.values[Counter.limit_user_rate], counters.values[Counter.limit_rate]) == (1, 0)
    ((delay, resume, args),) = loop.later
    assert 0.9 < delay < 1.1  # one token at 1 a second, and the slack
    _bucket(rb).tokens = 0.0  # as if the debt were paid
    resume(*args)
    assert b.intake.halted == 0 and b.blocked == set() and b.drained == 1
    charge_frame(g, c, rc)
    assert c.intake.halted == 0  # bob sends on
    # alice's first connection closes: her share here is one session of three.
    g.closed(a)
    cmap.delete("s1")
    remote.replace({user_key("alice"): 2}, time.time() + 5)
    g.tick(time.monotonic())
    assert _bucket(rb).rate == pytest.approx(2.0 / 3)
    # A connection moved here is charged to its first user again, sharing bob's bucket.
    moved = Conn(4, migration=MigrationState(moves=1))
    moved.stats.session_meta["s3"] = ("bob", 0.0)
    assert g.admit(moved)
    assert moved.intake.rate is not None and _bucket(moved.intake.rate) is _bucket(rc)
    # Every connection of a user gone: its buckets go.
    for conn in (b, c, moved):
        g.closed(conn)
    assert g.user_rates.shares == {} and g.user_rates.charged == {}


def test_a_stale_remote_count_leaves_the_rate_to_this_node(
    tables: tuple[AddrTable, UserSessions, Cmap], remote: RemoteUsers
) -> None:
    addrs, users, cmap = tables
    g = ConnGuard(LIMITS, 2, 0, addrs, users, cmap, StatsCounters(), Loop(), None, remote)  # type: ignore[arg-type]
    a = Conn(1)
    assert g.admit(a)
    remote.replace({user_key("alice"): 3}, time.time() - 1)  # the agent stopped writing
    assert _bucket(_session(g, cmap, a, "alice", "s1")).rate == 2.0


def test_with_the_quota_off_sessions_are_counted_for_the_rates_and_never_refused(
    tables: tuple[AddrTable, UserSessions, Cmap], remote: RemoteUsers
) -> None:
    addrs, users, cmap = tables
    limits = dataclasses.replace(LIMITS, max_sessions_per_user=0)
    g = ConnGuard(limits, 2, 0, addrs, users, cmap, StatsCounters(), Loop(), None, remote)  # type: ignore[arg-type]
    remote.replace({user_key("alice"): 40}, time.time() + 5)  # over any quota: not one here
    for i in range(MAX_SLOTS + 2):
        assert g.claim_session("alice", f"s{i}") is None
        assert cmap.save(CmapEntry(f"s{i}", 99, "", "", "", 4e9))  # on another worker
    assert len(users.sessions("alice")) == MAX_SLOTS  # counted as far as the table holds
    a = Conn(1)
    assert g.admit(a)
    g.user_session(a, "alice")
    assert a.intake.rate is not None
    # Its connection counts one session (none of the claimed is its own) of 32 + 40.
    assert _bucket(a.intake.rate).rate == pytest.approx(2.0 / (MAX_SLOTS + 40))
    off = ConnGuard(
        dataclasses.replace(limits, user_frame_rate=0),
        2,
        0,
        addrs,
        users,
        cmap,
        StatsCounters(),
        Loop(),
        None,
        remote,
    )  # type: ignore[arg-type]
    assert off.claim_session("bob", "b1") is None and users.sessions("bob") == []  # nothing on
