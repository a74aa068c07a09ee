"""HTable: Kamailio's htable in shared memory (values, expiry, dump, sweep, limits, processes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import (
    DEFAULT_TABLES,
    HT_KEY_MAX,
    HT_VALUE_MAX,
    HTable,
    ShmLayout,
    ShmLayoutError,
    segment_names,
)

from ..forking import Children

NOW = 1_700_000_000.0
TABLES = {"msrp": 3600.0, "perm": 0.0, "short": 10.0}


@pytest.fixture
def ht(prefix: str, tmp_path: Path) -> Iterator[HTable]:
    h = HTable.create(prefix, tmp_path / "ht.lock", 16, 1024, TABLES)
    try:
        yield h
    finally:
        h.close()
        h.unlink()


def test_set_get_replace_delete(ht: HTable) -> None:
    assert ht.get("msrp", "a", NOW) is None
    assert ht.set("msrp", "a", "msrp://192.0.2.1:40000", NOW)
    assert ht.set("msrp", "n", -42, NOW)
    assert ht.get("msrp", "a", NOW) == "msrp://192.0.2.1:40000"
    assert ht.get("msrp", "n", NOW) == -42
    assert ht.set("msrp", "a", 7, NOW)  # a new type replaces the old value
    assert ht.get("msrp", "a", NOW) == 7
    assert ht.set("msrp", "empty", "", NOW)
    assert ht.get("msrp", "empty", NOW) == ""
    assert ht.count() == 3
    assert ht.delete("msrp", "a")
    assert not ht.delete("msrp", "a")
    assert ht.get("msrp", "a", NOW) is None
    assert ht.tables == TABLES
    assert ht.table.verify() == []


def test_tables_are_separate_and_must_be_declared(ht: HTable) -> None:
    assert ht.set("msrp", "k", "one", NOW)
    assert ht.set("perm", "k", "two", NOW)
    assert ht.get("msrp", "k", NOW) == "one"
    assert ht.get("perm", "k", NOW) == "two"
    assert ht.delete("perm", "k")
    assert ht.get("msrp", "k", NOW) == "one"
    # The NUL separator: no table/key pair can pose as another.
    assert ht.set("msrp", "\0k", "nul", NOW)
    assert ht.get("msrp", "k", NOW) == "one"
    for call in (
        lambda: ht.get("nope", "k", NOW),
        lambda: ht.set("nope", "k", "v", NOW),
        lambda: ht.delete("nope", "k"),
        lambda: ht.expire("nope", "k", 5, NOW),
        lambda: ht.dump("nope", NOW),
    ):
        with pytest.raises(KeyError, match="nope"):
            call()


def test_autoexpire_defaults_and_explicit_expiry(ht: HTable) -> None:
    assert ht.set("msrp", "auto", "v", NOW)
    assert ht.lookup("msrp", "auto", NOW) == ("v", NOW + 3600)
    assert ht.set("perm", "never", "v", NOW)
    assert ht.lookup("perm", "never", NOW) == ("v", 0.0)
    assert ht.set("msrp", "zero", "v", NOW, expires_in=0)
    assert ht.lookup("msrp", "zero", NOW) == ("v", 0.0)
    assert ht.set("msrp", "negative", "v", NOW, expires_in=-5)
    assert ht.lookup("msrp", "negative", NOW) == ("v", 0.0)
    assert ht.set("perm", "timed", 1, NOW, expires_in=30)
    assert ht.lookup("perm", "timed", NOW) == (1, NOW + 30)
    # Replacing restarts the expiry (Kamailio's default updateexpire=1).
    assert ht.set("short", "r", "old", NOW)
    assert ht.set("short", "r", "new", NOW + 8)
    assert ht.lookup("short", "r", NOW + 17) == ("new", NOW + 18)


def test_expired_items_are_never_returned(ht: HTable) -> None:
    assert ht.set("short", "s", "v", NOW)  # expires NOW + 10
    assert ht.get("short", "s", NOW + 10) == "v"  # expiry == now: still valid
    assert ht.get("short", "s", NOW + 10.001) is None
    assert ht.lookup("short", "s", NOW + 11) is None
    assert ht.dump("short", NOW + 11) == []
    assert not ht.expire("short", "s", 100, NOW + 11)  # an expired item cannot be revived
    assert ht.get("short", "s", NOW + 11) is None
    assert ht.count() == 1  # stored until the sweep
    assert ht.delete("short", "s")  # but it can be removed


def test_expire_changes_only_the_expiry(ht: HTable) -> None:
    assert ht.set("msrp", "s", "value", NOW)
    assert ht.set("msrp", "i", 12, NOW)
    assert ht.expire("msrp", "s", 1805, NOW + 1)
    assert ht.lookup("msrp", "s", NOW) == ("value", NOW + 1806)
    assert ht.expire("msrp", "i", 0, NOW)  # <= 0: never
    assert ht.lookup("msrp", "i", NOW + 10**9) == (12, 0.0)
    assert ht.expire("perm", "missing", 5, NOW) is False
    assert ht.set("perm", "p", "v", NOW)
    assert ht.expire("perm", "p", 5, NOW)  # works on a table without autoexpire too
    assert ht.get("perm", "p", NOW + 6) is None
    assert ht.table.verify() == []


def test_dump_lists_live_items_of_one_table(ht: HTable) -> None:
    for i in range(40):
        assert ht.set("msrp", f"k{i:02}", f"v{i}" if i % 2 else i, NOW, expires_in=i)
    assert ht.set("perm", "other", "x", NOW)
    items = ht.dump("msrp", NOW + 20)
    # i == 0: never expires; 1..19 expired before NOW + 20; 20..39 alive.
    assert [d["key"] for d in items] == ["k00", *(f"k{i}" for i in range(20, 40))]
    assert items[0] == {"key": "k00", "value": 0, "type": "int", "expires": 0.0}
    assert items[1] == {"key": "k20", "value": 20, "type": "int", "expires": NOW + 20}
    assert items[2] == {"key": "k21", "value": "v21", "type": "str", "expires": NOW + 21}
    assert ht.dump("perm", NOW) == [{"key": "other", "value": "x", "type": "str", "expires": 0.0}]
    assert ht.dump("short", NOW) == []


def test_sweep_removes_only_items_expired_strictly_before_now(ht: HTable) -> None:
    for i in range(200):
        assert ht.set("msrp", f"s{i}", i, NOW, expires_in=i - 100 if i >= 100 else 0)
    for i in range(100, 200):
        assert ht.expire("msrp", f"s{i}", i - 100, NOW)  # NOW + 0 (never) .. NOW + 99
    assert ht.set("msrp", "past", 1, NOW - 50, expires_in=10)  # expired at NOW - 40
    removed = sum(ht.sweep_stripe(i, NOW + 50) for i in range(ht.n_stripes))
    assert removed == 50  # s101..s149 expired before NOW + 50, and "past"
    assert ht.get("msrp", "s150", NOW + 50) == 150  # expires == now survives
    assert ht.count() == 151
    assert sum(ht.sweep_stripe(i, NOW + 50) for i in range(ht.n_stripes)) == 0
    assert ht.table.verify() == []


def test_values_and_keys_that_do_not_fit_are_refused(ht: HTable) -> None:
    assert ht.set("perm", "s", "x" * HT_VALUE_MAX, NOW)
    assert ht.get("perm", "s", NOW) == "x" * HT_VALUE_MAX
    assert not ht.set("perm", "s", "x" * (HT_VALUE_MAX + 1), NOW)
    assert ht.get("perm", "s", NOW) == "x" * HT_VALUE_MAX  # the old value is untouched
    assert ht.set("perm", "u", "é" * 128, NOW)  # 256 bytes of UTF-8
    assert not ht.set("perm", "u2", "é" * 128 + "a", NOW)  # 257 bytes
    assert ht.set("perm", "big", (1 << 63) - 1, NOW)
    assert ht.set("perm", "small", -(1 << 63), NOW)
    assert not ht.set("perm", "over", 1 << 63, NOW)
    assert ht.get("perm", "big", NOW) == (1 << 63) - 1
    assert ht.get("perm", "small", NOW) == -(1 << 63)
    key = "k" * (HT_KEY_MAX - len("perm") - 1)  # exactly 128 bytes with "perm\0"
    assert ht.set("perm", key, 1, NOW)
    assert ht.get("perm", key, NOW) == 1
    long_key = key + "k"
    assert not ht.set("perm", long_key, 1, NOW)
    assert ht.get("perm", long_key, NOW) is None
    assert not ht.delete("perm", long_key)
    assert not ht.expire("perm", long_key, 5, NOW)
    assert ht.set("perm", "\udcff", "\udcfe", NOW)  # surrogates round-trip, never raise
    assert ht.get("perm", "\udcff", NOW) == "\udcfe"
    with pytest.raises(TypeError, match="float"):
        ht.set("perm", "f", 1.5, NOW)  # type: ignore[arg-type]


def test_table_declarations_are_checked_before_creating(prefix: str, tmp_path: Path) -> None:
    for bad in ({"": 1.0}, {"a\0b": 1.0}, {"x" * HT_KEY_MAX: 1.0}, {"t": -1.0}, {"t": 1e999}):
        with pytest.raises(ValueError):
            HTable.create(prefix, tmp_path / "ht.lock", 1, 8, bad)
    assert segment_names(f"{prefix}-") == []
    h = HTable.create(prefix, tmp_path / "ht.lock", 1, 8)
    try:
        assert h.tables == DEFAULT_TABLES == {"msrp": 3600.0, "_nonce": 300.0}
    finally:
        h.close()
        h.unlink()


def test_full_stripe_refuses_live_items_but_reuses_expired_ones(
    prefix: str, tmp_path: Path
) -> None:
    h = HTable.create(prefix, tmp_path / "ht.lock", 1, 8, TABLES)
    try:
        for i in range(8):
            assert h.set("perm", f"k{i}", i, NOW, expires_in=10 if i < 3 else 0)
        assert not h.set("perm", "k8", 8, NOW)  # full of live items: nothing is evicted
        assert h.set("perm", "k5", 55, NOW)  # replacing still works
        assert not h.set("perm", "k8", 8, NOW + 10)  # k0..k2 expire at NOW + 10: still live
        assert h.set("perm", "k8", 8, NOW + 11)  # now they are dead, and make room
        assert h.count() == 6
        assert [d["key"] for d in h.dump("perm", NOW + 11)] == [f"k{i}" for i in range(3, 9)]
        assert h.get("perm", "k5", NOW + 11) == 55
        assert h.table.verify() == []
    finally:
        h.close()
        h.unlink()


def test_another_process_sees_the_same_items(
    prefix: str, tmp_path: Path, ht: HTable, children: Children
) -> None:
    assert ht.set("msrp", "from-parent", "p", NOW)

    def child() -> None:
        h = HTable.attach(prefix, tmp_path / "ht.lock", 16, 1020, TABLES)  # 16 x 64 again
        assert h.get("msrp", "from-parent", NOW) == "p"
        assert h.set("msrp", "from-child", os.getpid(), NOW, expires_in=60)
        assert h.expire("msrp", "from-parent", 5, NOW)
        assert h.delete("perm", "doomed")
        h.close()

    assert ht.set("perm", "doomed", 1, NOW)
    pid = children.fork(child)
    assert children.wait(pid) == 0
    assert ht.lookup("msrp", "from-child", NOW) == (pid, NOW + 60)
    assert ht.lookup("msrp", "from-parent", NOW) == ("p", NOW + 5)
    assert ht.get("perm", "doomed", NOW) is None
    with pytest.raises(ShmLayoutError):
        HTable.attach(prefix, tmp_path / "ht.lock", 32, 1024, TABLES)


def test_processes_writing_at_once_keep_the_table_valid(
    prefix: str, tmp_path: Path, ht: HTable, children: Children
) -> None:
    def writer(n: int) -> None:
        h = HTable.attach(prefix, tmp_path / "ht.lock", 16, 1024, TABLES)
        for i in range(300):
            key = f"w{n}-{i % 50}"
            assert h.set("msrp", key, f"{n}:{i}", NOW)
            assert h.expire("msrp", key, i, NOW)
            if i % 7 == 0:
                assert h.delete("msrp", key)
        h.close()

    pids = [children.fork(lambda n=n: writer(n)) for n in range(4)]  # type: ignore[misc]
    assert [children.wait(pid) for pid in pids] == [0, 0, 0, 0]
    assert ht.table.verify() == []
    # Each writer's last action on key j was at i = 250 + j (deleted when i % 7 == 0).
    for n in range(4):
        for j in range(50):
            i = 250 + j
            expect = None if i % 7 == 0 else f"{n}:{i}"
            assert ht.get("msrp", f"w{n}-{j}", NOW) == expect


def test_layout_creates_and_attaches_the_htable(
    prefix: str, tmp_path: Path, children: Children
) -> None:
    # The call every existing site makes still works; the htable takes its defaults.
    lay = ShmLayout(
        prefix=prefix,
        lockfile=tmp_path / "msrpd.lock",
        cmap_stripes=256,
        cmap_capacity=1000,
        registry_capacity=256,
        process_slots=8,
    )
    spec = lay.regions()[4]
    assert (spec.name, spec.tag, spec.record_size) == (f"{prefix}-htable", b"htable/1", 416)
    shm = lay.create_all()
    try:
        assert (shm.htable.n_stripes, shm.htable.capacity) == (64, 4096)  # >= 64 slots each
        assert shm.htable.tables == {"msrp": 3600.0, "_nonce": 300.0}
        assert shm.htable.set("msrp", "s::srcaddr", "msrp://192.0.2.1:1", NOW)

        def worker() -> None:
            mine = lay.attach_all()
            assert mine.htable.get("msrp", "s::srcaddr", NOW) == "msrp://192.0.2.1:1"
            assert mine.htable.set("msrp", "s::srcsock", "tcp:127.0.0.1:2855", NOW)
            mine.close()

        assert children.wait(children.fork(worker)) == 0
        assert shm.htable.get("msrp", "s::srcsock", NOW) == "tcp:127.0.0.1:2855"
        assert (tmp_path / "msrpd.lock.htable").exists()
    finally:
        shm.close()
        shm.unlink()
    assert segment_names(f"{prefix}-") == []
    small = ShmLayout(prefix, tmp_path / "l", 4, 10, 10, 2, htable_capacity=100)
    assert small.regions()[4].size == HTable.geometry(1, 100).region_size  # 100 // 64 -> 1
    custom = ShmLayout(prefix, tmp_path / "l", 4, 10, 10, 2, htable_stripes=8)
    assert custom.regions()[4].size == HTable.geometry(8, 4096).region_size
    hash(custom)  # still hashable, like every other layout
