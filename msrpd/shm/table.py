"""StripedTable: a fixed-size, lock-striped, open-addressed hash table in one Region.

Strategy (kamailio's cmap shape, nginx's crash safety, style rules 15-16):
- The table is n_stripes sub-tables of `slots_per_stripe` fixed-size records each; a key's
  zlib.crc32 (identical in every process, unlike hash()) picks its stripe and home slot. How
  records are laid out, probed, changed and repaired after a crash is stripes.py; this module
  is the public API: which lock to take, and reading without one.
- A full stripe refuses inserts (put returns False): nothing is evicted.
- Keys longer than key_max are refused by put/get/delete (False/None), never raised.
- Every write takes exactly one stripe lock and inside it only packs, unpacks and copies
  bytes: no I/O, logging or allocation beyond struct objects (crash repair is the exception).
- get() and record() read without the lock when they can (the hot path: a cmap or registry
  lookup on every relayed frame; two fcntl calls cost more than the lookup itself). Each
  stripe header has a version that a writer makes odd before it changes anything and even
  (and larger) after, as a seqlock: a reader that sees the same even version before and after
  its probe and copy has a consistent copy; otherwise it takes the lock and reads again. This
  relies on loads and stores staying in program order, as on x86-64 (TSO), as the stats
  seqlocks do, and on the version being loaded and stored whole (one aligned access each).
- The lock-free probe (Stripes.copy_of) copies each slot it visits once and reads it from
  the copy; record() hands that copy to the caller, so a lookup copies the record once.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from .locks import StripeLocks
from .region import HEADER_SIZE, Region, ShmLayoutError
from .stripes import (
    STRIPE_QWORDS,
    TABLE_HEADER,
    Predicate,
    Stripes,
    TableGeometry,
)

__all__ = ["StripedTable", "key_hash"]

_crc32: Final = zlib.crc32  # bound once: a module attribute is looked up at every call


def key_hash(key: bytes) -> int:
    """The 32-bit hash every process computes for a key (CRC-32, as zlib.crc32)."""
    return zlib.crc32(key)


class StripedTable:
    """bytes key -> fixed-size bytes value, shared by processes. See the module docstring."""

    def __init__(self, region: Region, locks: StripeLocks, geometry: TableGeometry) -> None:
        # Use create() or attach().
        self.region = region
        self.locks = locks
        self.geometry = geometry
        self.stripes = Stripes(region.buf, geometry, region.mapping, HEADER_SIZE)
        # Bound once: get() and record() run on every relayed frame.
        self._buf = region.buf
        self._mask = self.stripes.mask
        self._key_max = geometry.key_max
        self._vsize = geometry.value_size
        self._voff = geometry.value_offset
        pad = geometry.record_size - self._voff
        self._record = struct.Struct(f"<BxHI{geometry.key_max}s{pad}s")
        # The lock-free reader reads versions through a u64 view of the whole mapping, one
        # aligned load each (the region, table and stripe headers are multiples of 8 bytes).
        self._versions = self.stripes.versions
        self._version_at = self.stripes.version_index(0)  # the rest inline in record()

    @classmethod
    def create(
        cls, name: str, lockfile: str | os.PathLike[str], geometry: TableGeometry, tag: bytes
    ) -> StripedTable:
        """Create the region (it must not exist) and open the stripe locks."""
        region = Region.create(name, geometry.region_size, tag)
        try:
            TABLE_HEADER.pack_into(region.buf, 0, *geometry.header())
            locks = StripeLocks.open(Path(lockfile), geometry.n_stripes)
        except BaseException:
            region.close()
            region.unlink()
            raise
        return cls(region, locks, geometry)

    @classmethod
    def attach(
        cls, name: str, lockfile: str | os.PathLike[str], geometry: TableGeometry, tag: bytes
    ) -> StripedTable:
        """Attach to a table made by create() with an equal geometry; after fork.

        Raises:
            ShmLayoutError: tag, size or geometry differ.
        """
        region = Region.attach(name, tag, geometry.region_size)
        try:
            found = TABLE_HEADER.unpack_from(region.buf, 0)
            if found != geometry.header():
                raise ShmLayoutError(f"{name}: geometry {found}, expected {geometry.header()}")
            locks = StripeLocks.open(Path(lockfile), geometry.n_stripes)
        except BaseException:
            region.close()
            raise
        return cls(region, locks, geometry)

    @property
    def n_stripes(self) -> int:
        return self.geometry.n_stripes

    @property
    def capacity(self) -> int:
        return self.geometry.capacity

    def place(self, key: bytes) -> tuple[int, int]:
        """(stripe, home slot) of a key."""
        h = zlib.crc32(key)
        return h & self._mask, (h >> self.stripes.shift) % self.stripes.slots

    def put(self, key: bytes, value: bytes) -> bool:
        """Insert or replace. False when the key is too long or its stripe is full."""
        if len(key) > self._key_max:
            return False
        if len(value) != self._vsize:
            raise ValueError(f"value must be {self._vsize} bytes, got {len(value)}")
        h = zlib.crc32(key)
        record = self._record.pack(1, len(key), h, key, value)
        stripe = h & self._mask
        self.locks.lock(stripe)
        try:
            return self.stripes.put(stripe, h, key, record)
        finally:
            self.locks.unlock(stripe)

    def get(self, key: bytes) -> bytes | None:
        """The value stored under key, or None (lock-free unless a writer is in the way)."""
        record = self.record(key)[2]
        return None if record is None else record[self._voff : self._voff + self._vsize]

    def record(self, key: bytes) -> tuple[int, int, bytes | None]:
        """(stamp, version, a copy of key's whole record or None), lock-free unless a writer
        is in the way. The value starts at geometry.value_offset: a reader that wants a few
        fields unpacks them from this one copy (get() copies the value again). The copy was
        exact while key's stripe had `version`; unchanged(stamp, version) later says whether
        it still is (a stripe's version never repeats)."""
        if len(key) > self._key_max:
            return 0, -1, None  # a version no stripe has
        h = _crc32(key)
        stripe = h & self._mask
        versions = self._versions
        at = self._version_at + STRIPE_QWORDS * stripe
        version = versions[at]
        if not version & 1:
            record = self.stripes.copy_of(stripe, h, key)  # only reads; checked below
            if versions[at] == version:
                return at, version, record
        self.locks.lock(stripe)
        try:
            self.stripes.enter(stripe)
            return at, versions[at], self.stripes.copy_of(stripe, h, key)
        finally:
            self.locks.unlock(stripe)

    def unchanged(self, stamp: int, version: int) -> bool:
        """Whether the stripe of a record() whose answer had this stamp and version is still
        at that version: nothing in it has been written since, not even by a writer that is
        now inside (one lock-free load)."""
        return self._versions[stamp] == version

    def update(self, key: bytes, change: Callable[[bytes], bytes | None]) -> bool:
        """Replace key's value with change(old) inside the lock; False when key is absent or
        change returns None. `change` must be a cheap pure function (it runs locked)."""
        if len(key) > self._key_max:
            return False
        with self._found(key) as (stripe, h, off):
            if off < 0:
                return False
            new = change(self.stripes.value_at(off))
            if new is None:
                return False
            return self.stripes.put(stripe, h, key, self._record.pack(1, len(key), h, key, new))

    def upsert(self, key: bytes, change: Callable[[bytes | None], bytes | None]) -> bool:
        """Store change(old value, or None when key is absent) under key, inside the lock;
        False when change returns None, the key is too long or the stripe is full. `change`
        must be a cheap pure function (it runs locked)."""
        if len(key) > self._key_max:
            return False
        with self._found(key) as (stripe, h, off):
            new = change(None if off < 0 else self.stripes.value_at(off))
            if new is None:
                return False
            return self.stripes.put(stripe, h, key, self._record.pack(1, len(key), h, key, new))

    def delete(
        self, key: bytes, head: struct.Struct | None = None, pred: Predicate | None = None
    ) -> bool:
        """Remove key; with `pred`, only if pred(head.unpack_from(value)) is true.

        `head` unpacks the leading fields of the value; pred runs inside the lock and must be
        a cheap pure function.
        """
        if len(key) > self._key_max:
            return False
        with self._found(key) as (stripe, _h, off):
            if off < 0:
                return False
            if head and pred and not pred(self.stripes.head_at(off, head)):
                return False
            self.stripes.remove(stripe, off)
            return True

    @contextmanager
    def _found(self, key: bytes) -> Iterator[tuple[int, int, int]]:
        """With key's stripe locked and repaired: (stripe, hash, offset of key's record, or
        negative when absent; see Stripes.find)."""
        h = zlib.crc32(key)
        stripe = h & self._mask
        self.locks.lock(stripe)
        try:
            self.stripes.enter(stripe)
            yield stripe, h, self.stripes.find(stripe, h, key)
        finally:
            self.locks.unlock(stripe)

    def remove_where(self, stripe: int, head: struct.Struct, pred: Predicate) -> int:
        """Remove the records of one stripe whose pred(head.unpack_from(value)) is true."""
        self.locks.lock(stripe)
        try:
            self.stripes.enter(stripe)
            return self.stripes.remove_where(stripe, head, pred)
        finally:
            self.locks.unlock(stripe)

    def items(self, stripe: int) -> list[tuple[bytes, bytes]]:
        """Copies of the (key, value) pairs of one stripe, taken under its lock."""
        self.locks.lock(stripe)
        try:
            self.stripes.enter(stripe)
            return self.stripes.items(stripe)
        finally:
            self.locks.unlock(stripe)

    def count(self) -> int:
        """Number of records: the sum of the per-stripe counts, read without locks.

        Each stripe's count is exact at some instant; with writers running, the sum is a
        snapshot that may mix instants. A stripe left by a killed writer may be off by one
        until its next user repairs it (verify() repairs every stripe).
        """
        return self.stripes.count()

    def verify(self) -> list[str]:
        """Check every stripe's invariants under its lock (repairing first); list problems."""
        problems: list[str] = []
        for stripe in range(self.n_stripes):
            self.locks.lock(stripe)
            try:
                self.stripes.enter(stripe)
                problems.extend(self.stripes.verify(stripe))
            finally:
                self.locks.unlock(stripe)
        return problems

    def close(self) -> None:
        """Unmap the region and close the lock file (this process only)."""
        self.stripes.release()  # the mapping cannot close while a view of it is alive
        self.region.close()
        self.locks.close()

    def unlink(self) -> None:
        """Remove the segment name (the supervisor, at stop). The lock file is kept."""
        self.region.unlink()
