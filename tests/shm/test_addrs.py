"""AddrTable (shm/addrs.py): connections per source address, AUTH failures and bans, shared by
processes through real shared memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import PROBATION, AddrTable, Admission, BanRule, probation_key

from ..forking import Children

NOW = 1_700_000_000.0


@pytest.fixture
def addrs(prefix: str, tmp_path: Path) -> Iterator[AddrTable]:
    table = AddrTable.create(prefix, tmp_path / "addrs.lock", 4, 256)
    try:
        yield table
    finally:
        table.close()
        table.unlink()


def test_connections_are_counted_up_to_the_limit(addrs: AddrTable) -> None:
    assert [addrs.open_conn("192.0.2.1", 3, NOW) for _ in range(4)] == [Admission.COUNTED] * 3 + [
        Admission.FULL
    ]
    assert addrs.conns("192.0.2.1") == 3
    assert addrs.open_conn("192.0.2.2", 3, NOW) is Admission.COUNTED  # another address
    addrs.close_conn("192.0.2.1", NOW)
    assert addrs.open_conn("192.0.2.1", 3, NOW) is Admission.COUNTED
    assert addrs.open_conn("[2001:db8::1]", 0, NOW) is Admission.COUNTED  # 0: no limit
    assert addrs.count() == 3


def test_the_last_close_removes_the_record(addrs: AddrTable) -> None:
    addrs.open_conn("192.0.2.1", 0, NOW)
    addrs.open_conn("192.0.2.1", 0, NOW)
    addrs.release("192.0.2.1", 2, NOW)
    assert addrs.conns("192.0.2.1") == 0 and addrs.count() == 0
    addrs.release("192.0.2.1", 1, NOW)  # nothing to give back: no record made
    assert addrs.count() == 0
    addrs.open_conn("192.0.2.1", 0, NOW)
    addrs.release("192.0.2.1", 5, NOW)  # more than counted: never below zero
    assert addrs.conns("192.0.2.1") == 0


def test_failures_within_the_window_ban_the_address(addrs: AddrTable) -> None:
    rule = BanRule(after=3, window=10.0, ban_time=60.0)
    assert not addrs.auth_failed("192.0.2.1", rule, NOW)
    assert not addrs.auth_failed("192.0.2.1", rule, NOW + 1)
    assert not addrs.banned("192.0.2.1", NOW + 2)
    assert addrs.auth_failed("192.0.2.1", rule, NOW + 2)  # the third: banned now
    assert addrs.banned("192.0.2.1", NOW + 2) and addrs.banned("192.0.2.1", NOW + 61.9)
    assert addrs.open_conn("192.0.2.1", 0, NOW + 3) is Admission.BANNED
    assert addrs.open_conn("192.0.2.9", 0, NOW + 3) is Admission.COUNTED
    assert not addrs.banned("192.0.2.1", NOW + 62.1)
    assert addrs.open_conn("192.0.2.1", 0, NOW + 62.1) is Admission.COUNTED


def test_failures_spread_wider_than_the_window_do_not_ban(addrs: AddrTable) -> None:
    rule = BanRule(after=3, window=10.0, ban_time=60.0)
    for t in (0, 6, 12, 18, 24):  # never three within 10 s of a window's first failure
        assert not addrs.auth_failed("192.0.2.1", rule, NOW + t)
    assert not addrs.banned("192.0.2.1", NOW + 24)
    assert not addrs.auth_failed("192.0.2.1", BanRule(0, 10.0, 60.0), NOW)  # off


def test_sweep_keeps_connections_bans_and_open_windows(addrs: AddrTable) -> None:
    rule = BanRule(after=2, window=10.0, ban_time=60.0)
    addrs.open_conn("192.0.2.1", 0, NOW)  # an open connection
    addrs.auth_failed("192.0.2.2", rule, NOW)  # a window open until NOW + 10
    addrs.auth_failed("192.0.2.3", rule, NOW)
    addrs.auth_failed("192.0.2.3", rule, NOW)  # banned until NOW + 60
    swept = sum(addrs.sweep_stripe(i, NOW + 5) for i in range(addrs.n_stripes))
    assert swept == 0 and addrs.count() == 3
    swept = sum(addrs.sweep_stripe(i, NOW + 11) for i in range(addrs.n_stripes))
    assert swept == 1 and addrs.count() == 2  # the window of .2 is over
    swept = sum(addrs.sweep_stripe(i, NOW + 61) for i in range(addrs.n_stripes))
    assert swept == 1 and addrs.conns("192.0.2.1") == 1  # the ban of .3 is over


def test_probation_keys_count_the_relay_and_each_worker(addrs: AddrTable) -> None:
    assert addrs.open_conn(PROBATION, 2, NOW) is Admission.COUNTED
    assert addrs.open_conn(probation_key(3), 0, NOW) is Admission.COUNTED
    assert addrs.open_conn(PROBATION, 2, NOW) is Admission.COUNTED
    assert addrs.open_conn(PROBATION, 2, NOW) is Admission.FULL
    assert addrs.conns(probation_key(3)) == 1 and addrs.conns(probation_key(4)) == 0


def test_processes_never_lose_a_count(addrs: AddrTable, children: Children) -> None:
    """Four processes each count 200 connections of one address and give 100 back: no update
    is lost (each is one locked read-modify-write), and none goes past the limit."""

    def worker() -> None:
        for _ in range(200):
            assert addrs.open_conn("192.0.2.1", 0, NOW) is Admission.COUNTED
        for _ in range(100):
            addrs.close_conn("192.0.2.1", NOW)

    pids = [children.fork(worker) for _ in range(4)]
    assert [children.wait(pid) for pid in pids] == [0] * 4
    assert addrs.conns("192.0.2.1") == 400

    def greedy() -> None:
        while addrs.open_conn("192.0.2.7", 150, NOW) is Admission.COUNTED:
            pass

    pids = [children.fork(greedy) for _ in range(4)]
    assert [children.wait(pid) for pid in pids] == [0] * 4
    assert addrs.conns("192.0.2.7") == 150


def test_a_cluster_ban_holds_until_its_end_and_only_lengthens(addrs: AddrTable) -> None:
    """ban() (the cluster agent's, issue 17): the address is refused until `until`, a shorter
    ban changes nothing, the record outlives a sweep until then, and its counts stay."""
    addrs.open_conn("192.0.2.1", 0, NOW)
    assert addrs.ban("192.0.2.1", NOW + 30)
    assert addrs.banned("192.0.2.1", NOW + 29.9) and not addrs.banned("192.0.2.1", NOW + 30)
    assert addrs.open_conn("192.0.2.1", 0, NOW + 1) is Admission.BANNED
    assert addrs.conns("192.0.2.1") == 1  # the open connection is still counted
    assert not addrs.ban("192.0.2.1", NOW + 10)  # shorter: kept as it was
    assert addrs.banned("192.0.2.1", NOW + 20)
    assert addrs.ban("192.0.2.1", NOW + 60)
    addrs.release("192.0.2.1", 1, NOW + 2)
    assert sum(addrs.sweep_stripe(i, NOW + 59) for i in range(addrs.n_stripes)) == 0
    assert addrs.banned("192.0.2.1", NOW + 59)
    assert not addrs.banned("192.0.2.2", NOW)  # another address
    assert sum(addrs.sweep_stripe(i, NOW + 61) for i in range(addrs.n_stripes)) == 1
    assert addrs.count() == 0


def test_a_local_failure_count_does_not_shorten_a_cluster_ban(addrs: AddrTable) -> None:
    rule = BanRule(after=2, window=30.0, ban_time=5.0)
    assert addrs.ban("192.0.2.1", NOW + 100)
    assert not addrs.auth_failed("192.0.2.1", rule, NOW + 1)
    assert not addrs.auth_failed("192.0.2.1", rule, NOW + 2)  # already banned longer
    assert addrs.banned("192.0.2.1", NOW + 99)
