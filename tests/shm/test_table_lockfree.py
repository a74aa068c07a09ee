"""StripedTable.get reads without the stripe lock (a per-stripe seqlock version), with real
forked processes: it does not wait for a lock holder that writes nothing, it takes the lock
when a writer is inside, and it never returns a torn or foreign value while another process
rewrites and shifts the records of the same stripe."""

from __future__ import annotations

import os
import time
from pathlib import Path

from msrpd.shm import StripedTable, TableGeometry
from msrpd.shm.stripes import VERSION, VERSION_AT, stripe_header

from ..forking import Children

TAG = b"test/1"


SIZE = 4096  # long records: a copy a reader could see half-done takes a while


def make(prefix: str, tmp_path: Path, capacity: int = 64) -> StripedTable:
    geometry = TableGeometry.for_capacity(1, capacity, key_max=16, value_size=SIZE)
    return StripedTable.create(f"{prefix}-lf", tmp_path / "lf.lock", geometry, TAG)


def _hold_lock(t: StripedTable, seconds: float, ready: int) -> None:
    t.locks.lock(0)
    os.write(ready, b"x")
    time.sleep(seconds)
    t.locks.unlock(0)


def test_get_does_not_wait_for_a_lock_holder_that_writes_nothing(
    prefix: str, tmp_path: Path, children: Children
) -> None:
    t = make(prefix, tmp_path)
    r, w = os.pipe()
    try:
        assert t.put(b"key", b"v" * SIZE)
        pid = children.fork(lambda: _hold_lock(t, 2.0, w))
        os.read(r, 1)
        started = time.monotonic()
        assert t.get(b"key") == b"v" * SIZE
        assert t.get(b"absent") is None
        assert time.monotonic() - started < 0.5  # the holder keeps the lock for 2 s
        assert children.wait(pid) == 0
    finally:
        os.close(r)
        os.close(w)
        t.close()
        t.unlink()


def test_get_takes_the_lock_while_a_writer_is_inside(
    prefix: str, tmp_path: Path, children: Children
) -> None:
    """An odd version (a writer between its first and last store) sends get to the lock; a
    version left odd by a dead writer is made even by the next lock holder."""
    t = make(prefix, tmp_path)
    r, w = os.pipe()
    at = stripe_header(0) + VERSION_AT
    try:
        assert t.put(b"key", b"v" * SIZE)
        version = VERSION.unpack_from(t._buf, at)[0]
        assert version % 2 == 0 and version > 0
        VERSION.pack_into(t._buf, at, version + 1)  # as a writer killed mid-change leaves it
        pid = children.fork(lambda: _hold_lock(t, 0.5, w))
        os.read(r, 1)
        started = time.monotonic()
        assert t.get(b"key") == b"v" * SIZE
        assert time.monotonic() - started >= 0.3  # it waited for the holder
        assert children.wait(pid) == 0
        repaired = VERSION.unpack_from(t._buf, at)[0]
        assert repaired % 2 == 0 and repaired > version
        assert t.get(b"key") == b"v" * SIZE
    finally:
        os.close(r)
        os.close(w)
        t.close()
        t.unlink()


def _churn(t: StripedTable, stop_at: float) -> None:
    """Rewrite `key` between two values and insert/delete neighbours, so backward shifts move
    its record around the stripe, until `stop_at`."""
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        assert t.put(b"key", (b"A" if n % 2 else b"B") * SIZE)
        for i in range(6):
            assert t.put(b"n%d" % i, b"%d" % i * SIZE)
        for i in range(6):
            assert t.delete(b"n%d" % i)


def test_reader_never_sees_a_torn_value(prefix: str, tmp_path: Path, children: Children) -> None:
    t = make(prefix, tmp_path, capacity=16)
    try:
        assert t.put(b"key", b"A" * SIZE)
        pid = children.fork(lambda: _churn(t, time.monotonic() + 2.0))
        seen: dict[bytes | None, int] = {}
        deadline = time.monotonic() + 1.5
        reads = 0
        while time.monotonic() < deadline:
            value = t.get(b"key")
            seen[value] = seen.get(value, 0) + 1
            reads += 1
        assert children.wait(pid) == 0
        whole = (b"A" * SIZE, b"B" * SIZE)
        foreign = {(v or b"")[:8]: n for v, n in seen.items() if v not in whole}
        assert not foreign, foreign
        assert len(seen) == 2 and reads > 10_000, (seen, reads)
        assert t.verify() == []
    finally:
        t.close()
        t.unlink()
