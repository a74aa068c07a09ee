"""ClusterBans.apply (cluster/bans.py) on a real shared ban table: what a peer published or
Redis held bans for at most ban_time from now; an end that is no number bans nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.cluster.bans import ClusterBans
from msrpd.cluster.keys import Keys
from msrpd.cluster.status import RedisStatus
from msrpd.config import LimitsSettings
from msrpd.shm import AddrTable, Counter, Stats


@pytest.fixture
def bans(prefix: str, tmp_path: Path) -> Iterator[ClusterBans]:
    addrs = AddrTable.create(prefix, tmp_path / "addrs.lock", 4, 256)
    stats = Stats.create(prefix, 2)
    try:
        status = RedisStatus("redis://127.0.0.1:1/0", stats, 0)
        yield ClusterBans(Keys("t:"), "n1", LimitsSettings(ban_time=60.0), addrs, status)
    finally:
        addrs.close()
        addrs.unlink()
        stats.close()
        stats.unlink()


@pytest.mark.parametrize("until", [1e300, 1e12])
def test_a_ban_far_in_the_future_lasts_ban_time(bans: ClusterBans, until: float) -> None:
    now = time.time()
    bans.apply("192.0.2.1", until, "forger")
    assert bans.addrs.banned("192.0.2.1", now + 59)
    assert not bans.addrs.banned("192.0.2.1", now + 61)
    assert bans.status.counters.values[Counter.cluster_bans_in] == 1


@pytest.mark.parametrize("until", [float("inf"), float("nan"), float("-inf")])
def test_a_ban_that_ends_at_no_time_is_refused(bans: ClusterBans, until: float) -> None:
    # float("inf") is what reload() reads from a ban key holding "inf".
    bans.apply("192.0.2.2", until, "Redis")
    assert not bans.addrs.banned("192.0.2.2", time.time())
    assert bans.status.counters.values[Counter.cluster_bans_in] == 0


def test_a_ban_within_ban_time_keeps_its_end(bans: ClusterBans) -> None:
    until = time.time() + 10
    bans.apply("192.0.2.3", until, "n2")
    assert bans.addrs.banned("192.0.2.3", until - 0.5)
    assert not bans.addrs.banned("192.0.2.3", until + 0.5)


def test_a_ban_heard_for_an_address_this_node_banned_already_counts(bans: ClusterBans) -> None:
    """A node's own workers ban on their own counts too, possibly a moment after its agent
    made the cluster's ban: the ban heard is in force here all the same, and counted."""
    now = time.time()
    assert bans.addrs.ban("192.0.2.4", now + 60)  # the workers' own ban, a little longer
    bans.apply("192.0.2.4", now + 59.9, "n1")
    assert bans.status.counters.values[Counter.cluster_bans_in] == 1
    assert bans.addrs.banned("192.0.2.4", now + 59.95)  # the longer ban stands
    bans.apply("192.0.2.5", now - 1, "n2")  # over already: not in force, not counted
    assert bans.status.counters.values[Counter.cluster_bans_in] == 1
