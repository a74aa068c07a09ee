"""Cmap.owner_key, the lookup of every relayed frame: the same answers as owner(), and its
cache of answers never outlives a change made by any process.

A cached answer is given again only while its stripe's version is the one it was read at
(every writer changes the version before it changes a record; versions never repeat). The
tests prove it with real forked processes: a session deleted, replaced or moved by another
process is seen by the very next lookup of a process whose cache holds it, a writer caught
inside the stripe sends the lookup past the cache, and under several writers and readers no
reader ever gets a mixed or stale answer.
"""

from __future__ import annotations

import os
import select
import time
import zlib
from functools import partial
from pathlib import Path

from msrpd.shm import Cmap, CmapEntry
from msrpd.shm.cmap import _VALUE, key_of
from msrpd.shm.stripes import VERSION, VERSION_AT, stripe_header

from ..forking import Children, never_goes_back

NOW = 1_700_000_000.0
SOCK = "tcp:127.0.0.1:2855"


def entry(sessid: str, conid: int = 7, sock: str = SOCK, expires: float = NOW + 60) -> CmapEntry:
    return CmapEntry(sessid, conid, "msrp://alice:9/a;tcp", "msrp://192.0.2.1:4", sock, expires)


def owns(cmap: Cmap, key: bytes) -> tuple[int, str, float] | None:
    """owner_key's answer as owner() gives it."""
    found = cmap.owner_key(key)
    return None if found is None else (found.conid, found.sock, found.expires)


def cached(cmap: Cmap, sessid: str) -> bool:
    return key_of(sessid) in cmap._owners


def test_owner_key_answers_as_owner(cmap: Cmap) -> None:
    assert cmap.save(entry("s1", conid=(1 << 64) - 1, sock="s" * 96))
    assert cmap.save(entry("s2", conid=9, sock="tls:[::1]:2856", expires=NOW - 1))
    assert cmap.save(entry("\udcff", conid=5))
    for sessid in ("s1", "s2", "\udcff", "S1", "", "x" * 65, "s"):
        first = owns(cmap, key_of(sessid))
        # lookup() decodes the whole record (another path through the table): the same.
        full = cmap.lookup(sessid, 0.0)
        assert first == (None if full is None else (full.conid, full.sock, full.expires))
        assert first == owns(cmap, key_of(sessid))  # a second time: from the cache
    assert owns(cmap, b"s1") == ((1 << 64) - 1, "s" * 96, NOW + 60)
    assert owns(cmap, b"s2") == (9, "tls:[::1]:2856", NOW - 1)  # expired: the caller decides
    assert cached(cmap, "s1") and not cached(cmap, "S1")  # misses are not kept
    assert cmap.owner_key(b"s1") is cmap.owner_key(b"s1")  # the cached answer itself


def test_the_cache_is_bounded(prefix: str, tmp_path: Path) -> None:
    c = Cmap.create(prefix, tmp_path / "cmap.lock", 16, 6000)
    try:
        for i in range(5000):
            assert c.save(entry(f"s{i}", conid=i))
        for i in range(5000):
            assert owns(c, f"s{i}".encode()) == (i, SOCK, NOW + 60)
            assert 0 < len(c._owners) <= 4096
        for i in range(0, 5000, 7):  # emptied once along the way: some from the table again
            assert owns(c, f"s{i}".encode()) == (i, SOCK, NOW + 60)
    finally:
        c.close()
        c.unlink()


def _in_child(children: Children, prefix: str, lockfile: Path, change: str) -> None:
    def run() -> None:
        c = Cmap.attach(prefix, lockfile, 16, 1024)
        if change == "delete":
            assert c.delete("s1")
        elif change == "replace":
            assert c.save(entry("s1", conid=8, sock="tls:127.0.0.1:2856"))
        elif change == "rebind":
            assert c.rebind("s1", 8, 1 << 60)
        elif change == "neighbour":
            # Another session of the same stripe: the stripe's version moves, s1 does not.
            stripe = c.table.place(b"s1")[0]
            other = next(f"n{i}" for i in range(999) if c.table.place(b"n%d" % i)[0] == stripe)
            assert c.save(entry(other, conid=99))
        elif change == "save":
            assert c.save(entry("s1", conid=11))
        c.close()

    assert children.wait(children.fork(run)) == 0


def test_a_change_by_another_process_is_seen_by_the_next_lookup(
    prefix: str, tmp_path: Path, cmap: Cmap, children: Children
) -> None:
    lockfile = tmp_path / "cmap.lock"
    assert cmap.save(entry("s1", conid=7))
    steps = [
        ("neighbour", (7, SOCK, NOW + 60)),
        ("replace", (8, "tls:127.0.0.1:2856", NOW + 60)),
        ("rebind", (1 << 60, "tls:127.0.0.1:2856", NOW + 60)),
        ("delete", None),
        ("save", (11, SOCK, NOW + 60)),
    ]
    before = owns(cmap, b"s1")
    for change, after in steps:
        assert owns(cmap, b"s1") == before  # a second time: from the cache
        assert cached(cmap, "s1") or before is None
        _in_child(children, prefix, lockfile, change)
        assert owns(cmap, b"s1") == after, change
        before = after


def test_a_writer_inside_the_stripe_sends_the_lookup_past_the_cache(cmap: Cmap) -> None:
    """A writer that made the version odd and rewrote the record, then died before it made
    the version even: the cached answer is not given; the lookup waits for the lock, and the
    next holder (this lookup) makes the version even."""
    assert cmap.save(entry("s1", conid=7))
    assert owns(cmap, b"s1") == (7, SOCK, NOW + 60)
    assert cached(cmap, "s1")
    table, stripes = cmap.table, cmap.table.stripes
    stripe, crc = table.place(b"s1")[0], zlib.crc32(b"s1")
    at = stripe_header(stripe) + VERSION_AT
    version = VERSION.unpack_from(table._buf, at)[0]
    stripes._begin_write(stripe)  # odd, then the record rewritten in place: no end_write
    off = stripes.find(stripe, crc, b"s1")
    record = table._record.pack(1, 2, crc, b"s1", cmap_value(entry("s1", conid=12)))
    stripes.buf[off : off + len(record)] = record
    assert VERSION.unpack_from(table._buf, at)[0] == version + 1
    assert owns(cmap, b"s1") == (12, SOCK, NOW + 60)
    repaired = VERSION.unpack_from(table._buf, at)[0]
    assert repaired == version + 2
    assert owns(cmap, b"s1") == (12, SOCK, NOW + 60) and cached(cmap, "s1")


def _churn(prefix: str, lockfile: Path, stop_at: float) -> None:
    """Save and delete one session over and over: its stripe's version moves on and on."""
    c = Cmap.attach(prefix, lockfile, 16, 1024)
    while time.monotonic() < stop_at:
        assert c.save(entry("s1", conid=8))
        assert c.delete("s1")
    c.close()


def test_a_stripes_version_never_reads_as_one_seen_before(
    prefix: str, tmp_path: Path, cmap: Cmap, children: Children
) -> None:
    """Versions go up by one store each: a reader never sees one go back (struct's pack_into
    zeroed the word before storing it: a lookup then read 0, an old version, and cached an
    answer under it that later writes could not invalidate)."""
    stripe = cmap.table.place(b"s1")[0]
    versions, at = cmap.table.stripes.versions, cmap.table.stripes.version_index(stripe)
    assert cmap.save(entry("s1", conid=7)) and cmap.delete("s1")
    churn = partial(_churn, prefix, tmp_path / "cmap.lock", time.monotonic() + 1)
    assert never_goes_back(children, churn, lambda: int(versions[at])) > 1000  # it wrote


def cmap_value(e: CmapEntry) -> bytes:
    """The value save() stores for e."""
    peer, addr, sock = e.peer.encode(), e.addr.encode(), e.sock.encode()
    return _VALUE.pack(e.conid, e.expires, len(peer), len(addr), len(sock), peer, addr, sock)


# -- several processes ------------------------------------------------------------------------

SESSIONS = 48
NEIGHBOURS = 24
SECONDS = 2.0


def sock_of(i: int, v: int) -> str:
    """A long sock naming its session and variant: a copy mixing two writes shows."""
    return f"tcp:{i}:{v}:".ljust(96, "abcdefghijklmnopqrstuvwxyz"[v % 26])


def variant(i: int, v: int) -> CmapEntry:
    return entry(f"s{i}", conid=(i << 16) | v, sock=sock_of(i, v), expires=NOW + v)


def check(i: int, found: tuple[int, str, float] | None) -> None:
    if found is None:
        return
    conid, sock, expires = found
    v = conid & 0xFFFF
    assert conid >> 16 == i and sock == sock_of(i, v) and expires == NOW + v, (i, found)


def _writer(prefix: str, lockfile: Path, seed: int, stop_at: float) -> None:
    """Replace, delete and re-save sessions, and insert/delete neighbours so that backward
    shifts move the sessions' records around their stripes."""
    c = Cmap.attach(prefix, lockfile, 2, 256)
    v = seed
    while time.monotonic() < stop_at:
        v += 2
        for i in range(SESSIONS):
            if (v + i) % 11 == 0:
                c.delete(f"s{i}")
            else:
                assert c.save(variant(i, v & 0xFFFF))
        for j in range(NEIGHBOURS):
            if v % 4 == seed:
                assert c.save(entry(f"n{j}", conid=j))
            else:
                c.delete(f"n{j}")
    c.close()


def _reader(prefix: str, lockfile: Path, ready: int, go: int, final: int) -> None:
    """Read every session while the writers run; at `go`, warm the cache on the settled
    table and say so; at `final`, every answer must be the final state at once."""
    c = Cmap.attach(prefix, lockfile, 2, 256)
    keys = [f"s{i}".encode() for i in range(SESSIONS)]
    reads = 0
    while not select.select([go], [], [], 0)[0]:
        for i, key in enumerate(keys):
            check(i, owns(c, key))
        reads += 1
    assert reads > 10, reads
    settled = [owns(c, key) for key in keys]
    assert all(k in c._owners for k, s in zip(keys, settled, strict=True) if s is not None)
    os.write(ready, b"r")
    select.select([final], [], [], 30)
    for i, key in enumerate(keys):
        assert owns(c, key) == final_owner(i), (i, owns(c, key))
    c.close()


def final_owner(i: int) -> tuple[int, str, float] | None:
    if i % 3 == 0:
        return None  # deleted
    e = variant(i, 0xFFFF if i % 3 == 1 else 0xFFFE)
    return (e.conid if i % 3 == 1 else 1 << 62, e.sock, e.expires)


def _finish(prefix: str, lockfile: Path) -> None:
    """Give every session its final state: deleted, replaced, or replaced then moved."""
    c = Cmap.attach(prefix, lockfile, 2, 256)
    for i in range(SESSIONS):
        if i % 3 == 0:
            c.delete(f"s{i}")
        elif i % 3 == 1:
            assert c.save(variant(i, 0xFFFF))
        else:
            assert c.save(variant(i, 0xFFFE))
            assert c.rebind(f"s{i}", (i << 16) | 0xFFFE, 1 << 62)
    c.close()


def test_readers_never_see_a_mixed_or_stale_answer(
    prefix: str, tmp_path: Path, children: Children
) -> None:
    lockfile = tmp_path / "cmap.lock"
    c = Cmap.create(prefix, lockfile, 2, 256)  # few stripes: every write moves a version
    pipes = [os.pipe() for _ in range(3)]  # readers -> test, test -> readers (go, final)
    (ready_r, ready_w), (go_r, go_w), (final_r, final_w) = pipes
    try:
        for i in range(SESSIONS):
            assert c.save(variant(i, 0))
        stop_at = time.monotonic() + SECONDS
        writers = [children.fork(partial(_writer, prefix, lockfile, s, stop_at)) for s in (0, 1)]
        reader = partial(_reader, prefix, lockfile, ready_w, go_r, final_r)
        readers = [children.fork(reader) for _ in range(2)]
        own = 0
        while time.monotonic() < stop_at:  # the test process reads too
            for i in range(SESSIONS):
                check(i, owns(c, f"s{i}".encode()))
            own += 1
        assert [children.wait(pid) for pid in writers] == [0, 0]
        assert own > 10
        os.write(go_w, b"gg")
        assert os.read(ready_r, 1) + os.read(ready_r, 1) == b"rr"
        settled = [owns(c, f"s{i}".encode()) for i in range(SESSIONS)]
        assert children.wait(children.fork(lambda: _finish(prefix, lockfile))) == 0
        os.write(final_w, b"ff")
        assert [children.wait(pid) for pid in readers] == [0, 0]
        assert any(s is not None for s in settled)
        for i in range(SESSIONS):
            assert owns(c, f"s{i}".encode()) == final_owner(i), i
        assert c.table.verify() == []
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        c.close()
        c.unlink()
