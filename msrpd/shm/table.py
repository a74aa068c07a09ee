"""StripedTable: a fixed-size, lock-striped, open-addressed hash table in one Region.

Strategy (kamailio's cmap shape, nginx's crash safety, style rules 15-16):
- The table is n_stripes sub-tables of `slots_per_stripe` fixed-size records each. A key's
  zlib.crc32 (identical in every process, unlike hash()) picks the stripe with its low k bits
  and the home slot with the rest; linear probing wraps inside the stripe, so one stripe lock
  covers a whole operation. Records hold no pointers, only bytes; positions are indices.
- Record: used u8, pad, key length u16, crc32 u32, key (key_max bytes), value (value_size
  bytes, the caller's struct), padded to a multiple of 8.
- Deletion is by backward shift (Knuth 6.4 algorithm R): later records of the probe run move
  into the hole, so there are no tombstones and a probe stops at the first empty slot.
- A full stripe refuses inserts (put returns False): nothing is evicted.
- Keys longer than key_max are refused by put/get/delete (False/None), never raised.
- Every write takes exactly one stripe lock and inside it only packs, unpacks and copies
  bytes: no I/O, logging or allocation beyond struct objects (repair, below, is the exception).
- get() reads without the lock when it can (the hot path: a cmap or registry lookup on every
  relayed frame; two fcntl calls cost more than the lookup itself). Each stripe header has a
  version that a writer makes odd before it changes anything and even (and larger) after, as
  a seqlock: a reader that sees the same even version before and after its probe has a
  consistent copy; otherwise it takes the lock and reads again. This relies on loads and
  stores staying in program order, as on x86-64 (TSO), as the stats seqlocks do.

Crash safety (a writer SIGKILLed inside a critical section; the kernel then drops its lock):
- Each stripe header has `count`, `busy` and `version`. Before a writer touches slot p it stores
  busy = p + 1; it stores busy = 0 when the stripe is consistent again. A delete keeps busy
  pointing at the current hole while it shifts records.
- The next holder that finds busy != 0 repairs the stripe: it treats slot busy - 1 as deleted
  (backward shift from it, with the same busy protocol, so a crash during repair is repaired
  again) and recounts. Every intermediate state of put/delete is "a valid table plus a garbage
  record at slot busy - 1", so this restores a valid table. A version left odd is made even by
  the next holder, so lock-free readers can use the stripe again.
- Cost of a crash: the killed process's in-flight operation either took effect or did not, and
  a replace in flight can also lose the key (its slot is the one discarded). Nothing else is
  lost, no torn record is ever returned, and no key is duplicated.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Final

from .locks import StripeLocks, check_stripes
from .region import Region, ShmLayoutError

__all__ = ["StripedTable", "TableGeometry", "key_hash"]

_TABLE_HEADER: Final = struct.Struct("<IIIII12x")  # n_stripes, slots, key_max, value, record
# count, busy (slot + 1 being written, 0 when idle), version (odd while a writer is inside)
_STRIPE: Final = struct.Struct("<III4x")
_BUSY: Final = struct.Struct("<I")
_VERSION: Final = struct.Struct("<I")
_VERSION_AT: Final = 8  # in a stripe header
_VERSION_WRAP: Final = 0xFFFFFFFF
_COUNT_BUSY: Final = struct.Struct("<II")
_SLOT: Final = struct.Struct("<BxHI")  # used, key length, crc32 of the key
_KEY: Final = _SLOT.size  # offset of the key in a record
_KEY_MAX_LIMIT: Final = 0xFFFF

Predicate = Callable[[tuple[Any, ...]], bool]


def _stripe_header(stripe: int) -> int:
    return _TABLE_HEADER.size + _STRIPE.size * stripe


def key_hash(key: bytes) -> int:
    """The 32-bit hash every process computes for a key (CRC-32, as zlib.crc32)."""
    return zlib.crc32(key)


@dataclass(frozen=True, slots=True)
class TableGeometry:
    """Shape of a table; create and attach must be given equal geometries."""

    n_stripes: int
    slots_per_stripe: int
    key_max: int
    value_size: int

    @classmethod
    def for_capacity(
        cls, n_stripes: int, capacity: int, key_max: int, value_size: int
    ) -> TableGeometry:
        """Round `capacity` up to a multiple of n_stripes (ceil(capacity / n_stripes) each)."""
        check_stripes(n_stripes)
        if capacity < 1 or not 0 < key_max <= _KEY_MAX_LIMIT or value_size < 0:
            raise ValueError(f"bad table shape: {capacity=} {key_max=} {value_size=}")
        return cls(n_stripes, -(-capacity // n_stripes), key_max, value_size)

    @property
    def record_size(self) -> int:
        return (_SLOT.size + self.key_max + self.value_size + 7) & ~7

    @property
    def capacity(self) -> int:
        return self.n_stripes * self.slots_per_stripe

    @property
    def records_offset(self) -> int:
        return _TABLE_HEADER.size + _STRIPE.size * self.n_stripes

    @property
    def region_size(self) -> int:
        return self.records_offset + self.capacity * self.record_size

    def header(self) -> tuple[int, ...]:
        return (*astuple(self), self.record_size)


class StripedTable:
    """bytes key -> fixed-size bytes value, shared by processes. See the module docstring."""

    def __init__(self, region: Region, locks: StripeLocks, geometry: TableGeometry) -> None:
        # Use create() or attach().
        self.region = region
        self.locks = locks
        self.geometry = geometry
        self._buf = region.buf
        self._mask = geometry.n_stripes - 1
        self._shift = check_stripes(geometry.n_stripes)
        self._slots = geometry.slots_per_stripe
        self._rs = geometry.record_size
        self._key_max = geometry.key_max
        self._vsize = geometry.value_size
        self._voff = _SLOT.size + geometry.key_max
        self._stripe_bytes = self._slots * self._rs
        self._records = geometry.records_offset
        self._record = struct.Struct(f"<BxHI{geometry.key_max}s{self._rs - self._voff}s")
        self._value = struct.Struct(f"{geometry.value_size}s")

    @classmethod
    def create(
        cls, name: str, lockfile: str | os.PathLike[str], geometry: TableGeometry, tag: bytes
    ) -> StripedTable:
        """Create the region (it must not exist) and open the stripe locks."""
        region = Region.create(name, geometry.region_size, tag)
        try:
            _TABLE_HEADER.pack_into(region.buf, 0, *geometry.header())
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
            found = _TABLE_HEADER.unpack_from(region.buf, 0)
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
        return h & self._mask, (h >> self._shift) % self._slots

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
            return self._put_locked(stripe, h, key, record)
        finally:
            self.locks.unlock(stripe)

    def get(self, key: bytes) -> bytes | None:
        """The value stored under key, or None (lock-free unless a writer is in the way)."""
        if len(key) > self._key_max:
            return None
        h = zlib.crc32(key)
        stripe = h & self._mask
        buf = self._buf
        at = _stripe_header(stripe) + _VERSION_AT
        version = _VERSION.unpack_from(buf, at)[0]
        if not version & 1:
            off = self._find_locked(stripe, h, key)  # only reads; checked below
            value = None if off < 0 else self._value.unpack_from(buf, off + self._voff)[0]
            if _VERSION.unpack_from(buf, at)[0] == version:
                return value
        self.locks.lock(stripe)
        try:
            self._enter_locked(stripe)
            off = self._find_locked(stripe, h, key)
            return None if off < 0 else self._value.unpack_from(self._buf, off + self._voff)[0]
        finally:
            self.locks.unlock(stripe)

    def update(self, key: bytes, change: Callable[[bytes], bytes | None]) -> bool:
        """Replace key's value with change(old) inside the lock; False when key is absent or
        change returns None. `change` must be a cheap pure function (it runs locked)."""
        if len(key) > self._key_max:
            return False
        with self._found(key) as (stripe, h, off):
            if off < 0:
                return False
            start = off + self._voff
            new = change(bytes(self._buf[start : start + self._vsize]))
            if new is None:
                return False
            return self._put_locked(stripe, h, key, self._record.pack(1, len(key), h, key, new))

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
            if head and pred and not pred(head.unpack_from(self._buf, off + self._voff)):
                return False
            self._remove_at_locked(stripe, (off - self._base(stripe)) // self._rs)
            return True

    @contextmanager
    def _found(self, key: bytes) -> Iterator[tuple[int, int, int]]:
        """With key's stripe locked and repaired: (stripe, hash, offset of key's record, or
        negative when absent; see _find_locked)."""
        h = zlib.crc32(key)
        stripe = h & self._mask
        self.locks.lock(stripe)
        try:
            self._enter_locked(stripe)
            yield stripe, h, self._find_locked(stripe, h, key)
        finally:
            self.locks.unlock(stripe)

    def remove_where(self, stripe: int, head: struct.Struct, pred: Predicate) -> int:
        """Remove the records of one stripe whose pred(head.unpack_from(value)) is true."""
        self.locks.lock(stripe)
        try:
            self._enter_locked(stripe)
            return self._remove_where_locked(stripe, head, pred)
        finally:
            self.locks.unlock(stripe)

    def items(self, stripe: int) -> list[tuple[bytes, bytes]]:
        """Copies of the (key, value) pairs of one stripe, taken under its lock."""
        self.locks.lock(stripe)
        try:
            self._enter_locked(stripe)
            return self._items_locked(stripe)
        finally:
            self.locks.unlock(stripe)

    def count(self) -> int:
        """Number of records: the sum of the per-stripe counts, read without locks.

        Each stripe's count is exact at some instant; with writers running, the sum is a
        snapshot that may mix instants. A stripe left by a killed writer may be off by one
        until its next user repairs it (verify() repairs every stripe).
        """
        words = _STRIPE.size // 4
        counts = struct.unpack_from(f"<{words * self.n_stripes}I", self._buf, _TABLE_HEADER.size)
        return sum(counts[0::words])

    def verify(self) -> list[str]:
        """Check every stripe's invariants under its lock (repairing first); list problems."""
        problems: list[str] = []
        for stripe in range(self.n_stripes):
            self.locks.lock(stripe)
            try:
                self._enter_locked(stripe)
                problems.extend(self._verify_locked(stripe))
            finally:
                self.locks.unlock(stripe)
        return problems

    def close(self) -> None:
        """Unmap the region and close the lock file (this process only)."""
        self.region.close()
        self.locks.close()

    def unlink(self) -> None:
        """Remove the segment name (the supervisor, at stop). The lock file is kept."""
        self.region.unlink()

    # -- everything below runs with the stripe lock held -------------------------------------

    def _base(self, stripe: int) -> int:
        return self._records + stripe * self._stripe_bytes

    def _enter_locked(self, stripe: int) -> None:
        busy = _BUSY.unpack_from(self._buf, _stripe_header(stripe) + 4)[0]
        if busy:
            self._repair_locked(stripe, busy - 1)
        if _VERSION.unpack_from(self._buf, _stripe_header(stripe) + _VERSION_AT)[0] & 1:
            self._end_write(stripe)  # a writer died after its changes, before this

    def _begin_write(self, stripe: int) -> None:
        at = _stripe_header(stripe) + _VERSION_AT
        version = _VERSION.unpack_from(self._buf, at)[0]
        if not version & 1:
            _VERSION.pack_into(self._buf, at, version + 1)

    def _end_write(self, stripe: int) -> None:
        at = _stripe_header(stripe) + _VERSION_AT
        version = _VERSION.unpack_from(self._buf, at)[0] | 1
        _VERSION.pack_into(self._buf, at, (version + 1) & _VERSION_WRAP)

    def _find_locked(self, stripe: int, h: int, key: bytes) -> int:
        """Offset of key's record; else -1 - (offset of the first free slot); -1 if full."""
        buf, rs, slots = self._buf, self._rs, self._slots
        base = self._base(stripe)
        i = (h >> self._shift) % slots
        klen = len(key)
        for _ in range(slots):
            off = base + i * rs
            used, length, kh = _SLOT.unpack_from(buf, off)
            if not used:
                return -1 - off
            if kh == h and length == klen and buf[off + _KEY : off + _KEY + klen] == key:
                return off
            i = i + 1 if i + 1 < slots else 0
        return -1

    def _put_locked(self, stripe: int, h: int, key: bytes, record: bytes) -> bool:
        self._enter_locked(stripe)
        off = self._find_locked(stripe, h, key)
        hdr = _stripe_header(stripe)
        if off == -1:
            return False  # stripe full, key absent
        count = _STRIPE.unpack_from(self._buf, hdr)[0]
        if off < 0:
            off = -1 - off
            count += 1
        self._begin_write(stripe)
        _BUSY.pack_into(self._buf, hdr + 4, (off - self._base(stripe)) // self._rs + 1)
        self._buf[off : off + self._rs] = record
        _COUNT_BUSY.pack_into(self._buf, hdr, count, 0)
        self._end_write(stripe)
        return True

    def _remove_at_locked(self, stripe: int, hole: int) -> None:
        """Backward-shift delete of slot `hole`; busy always names the current hole."""
        buf, rs, slots, shift = self._buf, self._rs, self._slots, self._shift
        base, busy = self._base(stripe), _stripe_header(stripe) + 4
        self._begin_write(stripe)
        _BUSY.pack_into(buf, busy, hole + 1)
        j = hole
        while True:
            j = j + 1 if j + 1 < slots else 0
            off = base + j * rs
            if j == hole or not buf[off]:
                break
            home = (_SLOT.unpack_from(buf, off)[2] >> shift) % slots
            # The record at j stays if its home lies cyclically in (hole, j].
            if (hole < home <= j) if hole < j else (home > hole or home <= j):
                continue
            dst = base + hole * rs
            buf[dst : dst + rs] = buf[off : off + rs]
            hole = j
            _BUSY.pack_into(buf, busy, hole + 1)
        buf[base + hole * rs] = 0
        count = _STRIPE.unpack_from(buf, busy - 4)[0]
        _COUNT_BUSY.pack_into(buf, busy - 4, max(count - 1, 0), 0)
        self._end_write(stripe)

    def _repair_locked(self, stripe: int, suspect: int) -> None:
        """A writer died inside this stripe: drop its slot, restore the probe runs, recount."""
        if not 0 <= suspect < self._slots:
            suspect = 0  # garbage in busy: a no-op shift from slot 0, then recount
        self._remove_at_locked(stripe, suspect)
        base, rs = self._base(stripe), self._rs
        used = sum(1 for i in range(self._slots) if self._buf[base + i * rs])
        _COUNT_BUSY.pack_into(self._buf, _stripe_header(stripe), used, 0)

    def _remove_where_locked(self, stripe: int, head: struct.Struct, pred: Predicate) -> int:
        # After a removal slot i is examined again: the shift may have moved a record into it.
        # A shift only moves records backward within their run, so none skips the cursor.
        buf, rs, voff = self._buf, self._rs, self._voff
        base, removed, i = self._base(stripe), 0, 0
        while i < self._slots:
            off = base + i * rs
            if buf[off] and pred(head.unpack_from(buf, off + voff)):
                self._remove_at_locked(stripe, i)
                removed += 1
            else:
                i += 1
        return removed

    def _items_locked(self, stripe: int) -> list[tuple[bytes, bytes]]:
        buf, rs, voff = self._buf, self._rs, self._voff
        base = self._base(stripe)
        out: list[tuple[bytes, bytes]] = []
        for i in range(self._slots):
            off = base + i * rs
            if buf[off]:
                klen = _SLOT.unpack_from(buf, off)[1]
                key = bytes(buf[off + _KEY : off + _KEY + klen])
                out.append((key, self._value.unpack_from(buf, off + voff)[0]))
        return out

    def _verify_locked(self, stripe: int) -> list[str]:
        buf, rs, slots = self._buf, self._rs, self._slots
        base = self._base(stripe)
        seen: set[bytes] = set()
        problems: list[str] = []
        for i in range(slots):
            off = base + i * rs
            used, klen, kh = _SLOT.unpack_from(buf, off)
            if not used:
                continue
            key = bytes(buf[off + _KEY : off + _KEY + klen])
            if kh != zlib.crc32(key) or kh & self._mask != stripe or key in seen:
                problems.append(f"stripe {stripe} slot {i}: bad hash, stripe or duplicate")
            seen.add(key)
            j = (kh >> self._shift) % slots
            while j != i and buf[base + j * rs]:
                j = j + 1 if j + 1 < slots else 0
            if j != i:
                problems.append(f"stripe {stripe} slot {i}: empty slot {j} on its probe path")
        count = _STRIPE.unpack_from(buf, _stripe_header(stripe))[0]
        if count != len(seen):
            problems.append(f"stripe {stripe}: count {count}, {len(seen)} records")
        return problems
