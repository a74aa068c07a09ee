"""Cmap and Registry: exact matching, expiry, sweeps, per-connection deletes, field limits."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from msrpd.shm import Cmap, CmapEntry, Registry, ShmLayoutError
from msrpd.workers.handoff import make_conid, owner_conids

from ..forking import Children

NOW = 1_700_000_000.0


def entry(sessid: str, conid: int = 7, expires: float = NOW + 60, **kw: str) -> CmapEntry:
    fields = {"peer": "msrp://alice:9/a;tcp", "addr": "msrp://192.0.2.1:40000"} | kw
    return CmapEntry(
        sessid, conid, fields["peer"], fields["addr"], kw.get("sock", "tcp:127.0.0.1:2855"), expires
    )


# Two session ids with the same CRC-32, so the same stripe and home slot (found by a birthday
# search over f"msrp-{i:x}"; the test re-checks the collision).
CRC_TWINS = ("msrp-fc098", "msrp-500044")


def test_save_lookup_replace_delete(cmap: Cmap) -> None:
    e = entry("s1")
    assert cmap.save(e)
    assert cmap.lookup("s1", NOW) == e
    e2 = entry("s1", conid=8, addr="msrp://192.0.2.2:1")
    assert cmap.save(e2)  # same sessid: replaced, not duplicated
    assert cmap.lookup("s1", NOW) == e2
    assert cmap.count() == 1
    assert cmap.delete("s1")
    assert not cmap.delete("s1")
    assert cmap.lookup("s1", NOW) is None
    assert (cmap.n_stripes, cmap.capacity) == (16, 1024)


def test_owner_reads_the_conid_sock_and_expiry_of_exactly_that_session(cmap: Cmap) -> None:
    # Full-length fields on both sides of sock: owner() skips peer and addr by offset.
    long = entry("s1", conid=(1 << 64) - 1, peer="p" * 300, addr="a" * 96, sock="s" * 96)
    assert cmap.save(long)
    assert cmap.owner("s1") == ((1 << 64) - 1, "s" * 96, NOW + 60)
    assert cmap.save(entry("s2", conid=9, expires=NOW - 1, sock="tls:[::1]:2856"))
    assert cmap.owner("s2") == (9, "tls:[::1]:2856", NOW - 1)  # expired: the caller decides
    assert cmap.lookup("s2", NOW) is None
    a, b = CRC_TWINS
    assert cmap.save(entry(a, conid=3))
    assert cmap.owner(b) is None and cmap.owner("S1") is None and cmap.owner("") is None
    assert cmap.owner(a) == (3, "tcp:127.0.0.1:2855", NOW + 60)


def test_rebind_moves_only_the_named_connections_session(cmap: Cmap) -> None:
    e = entry("s1", conid=7, addr="msrp://192.0.2.9:5")
    assert cmap.save(e)
    assert not cmap.rebind("s1", 8, 9)  # not connection 8's session: untouched
    assert cmap.lookup("s1", NOW) == e
    assert cmap.rebind("s1", 7, 1 << 60)
    moved = cmap.lookup("s1", NOW)
    assert moved is not None and moved.conid == 1 << 60
    assert (moved.addr, moved.peer, moved.expires) == (e.addr, e.peer, e.expires)
    assert not cmap.rebind("gone", 7, 9)
    assert cmap.count() == 1


def test_exact_case_sensitive_match_only(cmap: Cmap) -> None:
    a, b = CRC_TWINS
    assert a != b and zlib.crc32(a.encode()) == zlib.crc32(b.encode())
    assert cmap.save(entry(a, conid=1))
    assert cmap.lookup(b, NOW) is None  # Kamailio's walk would report success here
    assert cmap.save(entry(b, conid=2))
    assert cmap.lookup(a, NOW).conid == 1  # type: ignore[union-attr]
    assert cmap.lookup(b, NOW).conid == 2  # type: ignore[union-attr]
    assert cmap.save(entry("AbC"))
    for other in ("abc", "ABC", "AbC ", "Ab", "AbCd", ""):
        assert cmap.lookup(other, NOW) is None
    assert cmap.delete(a)
    assert cmap.lookup(b, NOW).conid == 2  # type: ignore[union-attr]


def test_expired_entries_are_never_returned(cmap: Cmap) -> None:
    assert cmap.save(entry("s", expires=NOW))
    assert cmap.lookup("s", NOW) is not None  # expires == now: still valid
    assert cmap.lookup("s", NOW + 0.001) is None
    assert cmap.count() == 1  # still stored until the sweep
    assert [e.sessid for e in cmap.entries()] == ["s"]


def test_sweep_removes_only_entries_expired_strictly_before_now(cmap: Cmap) -> None:
    for i in range(200):
        assert cmap.save(entry(f"s{i}", expires=NOW - 100 + i))  # expires NOW-100 .. NOW+99
    removed = sum(cmap.sweep_stripe(i, NOW) for i in range(cmap.n_stripes))
    assert removed == 100
    assert sorted(int(e.sessid[1:]) for e in cmap.entries()) == list(range(100, 200))
    assert cmap.lookup("s100", NOW) is not None  # expires == now survives
    assert sum(cmap.sweep_stripe(i, NOW) for i in range(cmap.n_stripes)) == 0
    assert cmap.table.verify() == []


def test_delete_conn_and_entries(cmap: Cmap) -> None:
    for i in range(300):
        assert cmap.save(entry(f"s{i}", conid=i % 3))
    assert cmap.delete_conn(1) == 100
    assert cmap.delete_conn(1) == 0
    left = cmap.entries()
    assert len(left) == cmap.count() == 200
    assert {e.conid for e in left} == {0, 2}
    assert all(e == entry(e.sessid, conid=e.conid) for e in left)
    assert cmap.table.verify() == []


def test_field_limits(cmap: Cmap) -> None:
    assert cmap.save(entry("x" * 64))
    assert not cmap.save(entry("x" * 65))
    assert not cmap.save(entry("é" * 33))  # 66 bytes of UTF-8
    assert cmap.save(entry("a", addr="a" * 96, sock="s" * 96))
    assert not cmap.save(entry("b", addr="a" * 97))
    assert not cmap.save(entry("c", sock="s" * 97))
    assert cmap.lookup("x" * 65, NOW) is None
    assert not cmap.delete("x" * 65)
    assert cmap.save(entry("p", peer="p" * 256))
    assert cmap.lookup("p", NOW).peer == "p" * 256  # type: ignore[union-attr]
    assert cmap.save(entry("q", peer="q" * 300))
    assert cmap.lookup("q", NOW).peer == "q" * 253 + "..."  # type: ignore[union-attr]
    assert cmap.save(entry("r", peer="q" * 252 + "é" * 10))  # never cut inside a character
    assert cmap.lookup("r", NOW).peer == "q" * 252 + "..."  # type: ignore[union-attr]
    assert cmap.save(entry("\udcff"))  # surrogates do not raise
    assert cmap.lookup("\udcff", NOW) is not None
    with pytest.raises(ValueError, match="u64"):
        cmap.save(entry("z", conid=-1))
    with pytest.raises(ValueError, match="u64"):
        cmap.save(entry("z", conid=1 << 64))
    assert cmap.save(entry("z", conid=(1 << 64) - 1))


def test_full_cmap_refuses(prefix: str, tmp_path: Path) -> None:
    c = Cmap.create(prefix, tmp_path / "cmap.lock", 1, 8)
    try:
        for i in range(8):
            assert c.save(entry(f"s{i}"))
        assert not c.save(entry("s8"))
        assert c.save(entry("s3", conid=99))  # replacing still works
        assert len(c.entries()) == 8
    finally:
        c.close()
        c.unlink()


def test_attach_in_a_child_after_fork(
    prefix: str, tmp_path: Path, cmap: Cmap, children: Children
) -> None:
    assert cmap.save(entry("from-parent"))

    def child() -> None:
        c = Cmap.attach(prefix, tmp_path / "cmap.lock", 16, 1020)  # rounds up to 16 x 64
        assert c.lookup("from-parent", NOW) == entry("from-parent")
        assert c.save(entry("from-child", conid=os.getpid()))
        c.close()

    pid = children.fork(child)
    assert children.wait(pid) == 0
    assert cmap.lookup("from-child", NOW) == entry("from-child", conid=pid)
    for stripes, capacity in ((32, 1024), (16, 2048), (16, 1000)):
        with pytest.raises(ShmLayoutError):
            Cmap.attach(prefix, tmp_path / "cmap.lock", stripes, capacity)
    with pytest.raises(FileNotFoundError):
        Registry.attach(prefix, tmp_path / "registry.lock", 16, 1024)


def test_registry(prefix: str, tmp_path: Path) -> None:
    r = Registry.create(prefix, tmp_path / "registry.lock", 4, 64)
    try:
        assert r.lookup("tcp:127.0.0.1:40000") is None
        assert r.register("tcp:127.0.0.1:40000", 5)
        assert r.register("tls:[::1]:2856", 6)
        assert r.lookup("tcp:127.0.0.1:40000") == 5
        assert r.lookup("TCP:127.0.0.1:40000") is None  # keys are exact text
        assert not r.unregister("tcp:127.0.0.1:40000", 4)  # another connection's close
        assert r.register("tcp:127.0.0.1:40000", 7)  # a newer connection took over
        assert not r.unregister("tcp:127.0.0.1:40000", 5)
        assert r.lookup("tcp:127.0.0.1:40000") == 7
        assert r.unregister("tcp:127.0.0.1:40000", 7)
        assert r.lookup("tcp:127.0.0.1:40000") is None
        assert not r.register("x" * 97, 1)
        assert r.lookup("x" * 97) is None
        assert r.register("x" * 96, (1 << 64) - 1)
        assert r.lookup("x" * 96) == (1 << 64) - 1
        assert r.count() == 2
        with pytest.raises(ValueError, match="u64"):
            r.register("a", -1)
    finally:
        r.close()
        r.unlink()


def test_purge_by_owner_removes_exactly_the_dead_workers_entries(
    cmap: Cmap, prefix: str, tmp_path: Path
) -> None:
    """Issue 12: the supervisor purges every entry whose conid belongs to a dead worker's
    (slot, generation), in cmap and registry; its neighbours' ids (the same slot in another
    generation, the next slot, the range's two ends) stay."""
    dead = owner_conids(1, 3)
    conids = [
        make_conid(1, 3, 0),
        make_conid(1, 3, 1),
        make_conid(1, 3, (1 << 40) - 1),
        make_conid(1, 2, (1 << 40) - 1),
        make_conid(1, 4, 0),
        make_conid(0, 3, 5),
        make_conid(2, 3, 0),
    ]
    registry = Registry.create(prefix, tmp_path / "registry.lock", 4, 256)
    try:
        for i in range(210):
            conid = conids[i % len(conids)]
            assert cmap.save(entry(f"s{i}", conid=conid))
            assert registry.register(f"tcp:127.0.0.1:{40000 + i}", conid)
        assert cmap.purge(dead) == 90 and registry.purge(dead) == 90
        assert cmap.purge(dead) == 0 and registry.purge(dead) == 0
        left = cmap.entries()
        assert len(left) == cmap.count() == 120
        assert {e.conid for e in left} == set(conids[3:])
        assert all(e == entry(e.sessid, conid=e.conid) for e in left)
        kept = [registry.lookup(f"tcp:127.0.0.1:{40000 + i}") for i in range(210)]
        assert kept == [None if i % 7 < 3 else conids[i % 7] for i in range(210)]
        assert cmap.table.verify() == [] and registry.table.verify() == []
    finally:
        registry.close()
        registry.unlink()


def test_expiries_name_every_session_with_its_expiry(cmap: Cmap) -> None:
    """What the cluster agent's directory reads (issue 17): every entry, expired ones not yet
    swept too (the directory leaves those out itself)."""
    assert cmap.expiries() == {}
    for i in range(100):
        assert cmap.save(entry(f"s{i}", conid=i, expires=NOW + i))
    cmap.save(entry("s5", conid=5, expires=NOW + 500))  # a re-AUTH's new expiry
    cmap.delete("s7")
    expected = {f"s{i}": NOW + i for i in range(100) if i != 7} | {"s5": NOW + 500}
    assert cmap.expiries() == expected
