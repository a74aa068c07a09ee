"""The records of a StripedTable (table.py): layout, probing, and every change to a stripe.

Layout:
- A table header (n_stripes, slots, key_max, value size, record size), one header per stripe
  (count, busy, version), then n_stripes runs of `slots_per_stripe` fixed-size records. Records
  hold no pointers, only bytes; positions are indices.
- Record: used u8, pad, key length u16, crc32 u32, key (key_max bytes), value (value_size
  bytes, the caller's struct), padded to a multiple of 8.
- A key's zlib.crc32 picks the stripe with its low k bits and the home slot with the rest;
  linear probing wraps inside the stripe, so one stripe lock covers a whole operation.
- Deletion is by backward shift (Knuth 6.4 algorithm R): later records of the probe run move
  into the hole, so there are no tombstones and a probe stops at the first empty slot.

Rules: every method but `find`, `copy_of` and `count` runs with the stripe's lock held (the
caller takes it), and inside it only packs, unpacks and copies bytes. A writer makes the
stripe's version odd before it changes anything and even (and larger) after, so lock-free
readers can tell a consistent copy (a seqlock, see StripedTable.get).

Crash safety (a writer SIGKILLed inside a critical section; the kernel then drops its lock):
- Before a writer touches slot p it stores busy = p + 1; it stores busy = 0 when the stripe is
  consistent again. A delete keeps busy pointing at the current hole while it shifts records.
- The next holder that finds busy != 0 repairs the stripe (`enter`): it treats slot busy - 1
  as deleted (backward shift from it, with the same busy protocol, so a crash during repair is
  repaired again) and recounts. Every intermediate state of put/delete is "a valid table plus a
  garbage record at slot busy - 1", so this restores a valid table. A version left odd is made
  even by the next holder, so lock-free readers can use the stripe again.
- Cost of a crash: the killed process's in-flight operation either took effect or did not, and
  a replace in flight can also lose the key (its slot is the one discarded). Nothing else is
  lost, no torn record is ever returned, and no key is duplicated.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any, Final

from .locks import check_stripes

__all__ = [
    "BUSY",
    "RECORD_HEAD",
    "STRIPE_QWORDS",
    "TABLE_HEADER",
    "VERSION",
    "VERSION_AT",
    "Predicate",
    "Stripes",
    "TableGeometry",
    "stripe_header",
]

TABLE_HEADER: Final = struct.Struct("<IIIII12x")  # n_stripes, slots, key_max, value, record
# count, busy (slot + 1 being written, 0 when idle), version (odd while a writer is inside)
_STRIPE: Final = struct.Struct("<IIQ")
STRIPE_QWORDS: Final = 2  # _STRIPE.size in u64 words
BUSY: Final = struct.Struct("<I")
# The version is a u64 (it was a u32 and 4 zero bytes of padding, the same bytes until it
# passes 2**32): it never repeats (2**63 writes), so a reader that sees the version it saw
# before knows the stripe is unchanged since (Cmap.owner_key's cache). The header's words are
# stored through typed views of the mapping (Stripes._store32, Stripes.versions): one aligned
# store each. struct's pack_into zeroes the bytes before it stores the value, so a lock-free reader
# could read a version of 0 (even, and seen before) in between, or a writer killed there
# leave busy at 0 in the middle of a shift. The same bytes as "<Q" on x86-64, which the
# lock-free readers assume anyway (TSO, see StripedTable.get).
VERSION: Final = struct.Struct("@Q")
VERSION_AT: Final = 8  # in a stripe header
_VERSION_WRAP: Final = 0xFFFF_FFFF_FFFF_FFFF
_SLOT: Final = struct.Struct("<BxHI")  # used, key length, crc32 of the key
RECORD_HEAD: Final = 8  # _SLOT.size as a native int: the key's offset in a record
_KEY: Final = RECORD_HEAD
_KEY_MAX_LIMIT: Final = 0xFFFF

Predicate = Callable[[tuple[Any, ...]], bool]


def stripe_header(stripe: int) -> int:
    return TABLE_HEADER.size + _STRIPE.size * stripe


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
        return TABLE_HEADER.size + _STRIPE.size * self.n_stripes

    @property
    def region_size(self) -> int:
        return self.records_offset + self.capacity * self.record_size

    @property
    def value_offset(self) -> int:
        """Where the value starts in a record."""
        return _SLOT.size + self.key_max

    def header(self) -> tuple[int, ...]:
        return (*astuple(self), self.record_size)


class Stripes:
    """The stripes of one table's region (`buf`), shaped by `geometry`."""

    def __init__(
        self, buf: memoryview, geometry: TableGeometry, mapping: mmap.mmap, at: int
    ) -> None:
        """`buf` starts at offset `at` of `mapping` (the lock-free reader copies from it)."""
        self.buf = buf
        self.n_stripes = geometry.n_stripes
        self.mask = geometry.n_stripes - 1
        self.shift = check_stripes(geometry.n_stripes)
        self.slots = geometry.slots_per_stripe
        self.rs = geometry.record_size
        self._voff = geometry.value_offset
        self._stripe_bytes = self.slots * self.rs
        self._records = geometry.records_offset
        self._value = struct.Struct(f"{geometry.value_size}s")
        self._map = mapping
        self._map_records = at + self._records
        # `buf` is `mapping` from `at`, a multiple of 8 (as are the table and stripe headers).
        self._at = at
        self._words = memoryview(mapping).cast("I")
        self.versions = memoryview(mapping).cast("Q")
        """The mapping as u64 words: stripe s's version is versions[version_index(s)]."""

    def version_index(self, stripe: int) -> int:
        """Stripe `stripe`'s version in `versions`: version_index(0) + STRIPE_QWORDS * stripe."""
        return (self._at + stripe_header(stripe) + VERSION_AT) >> 3

    def _store32(self, off: int, value: int) -> None:
        """One aligned 4-byte store at `off` in `buf` (see VERSION)."""
        self._words[(self._at + off) >> 2] = value

    def release(self) -> None:
        """Let the mapping close: no view of it may be alive then."""
        self._words.release()
        self.versions.release()

    def base(self, stripe: int) -> int:
        """Offset of the stripe's first record."""
        return self._records + stripe * self._stripe_bytes

    def find(self, stripe: int, h: int, key: bytes) -> int:
        """Offset of key's record; else -1 - (offset of the first free slot); -1 if full.
        Only reads, so lock-free readers use it too (and check the version around it)."""
        buf, rs, slots = self.buf, self.rs, self.slots
        base = self._records + stripe * self._stripe_bytes
        i = (h >> self.shift) % slots
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

    def copy_of(self, stripe: int, h: int, key: bytes) -> bytes | None:
        """A copy of key's whole record, or None: find() with one bytes copy per slot
        visited, read from the copy (a slice of the mmap is bytes in one memcpy; the key
        then compares with memcmp, where a memoryview compares byte by byte), and no
        Python-level call per field. Only reads: a lock-free caller checks the version around
        it, and a torn slot can only fail to match or end the probe early."""
        klen = len(key)
        mapping, rs, slots = self._map, self.rs, self.slots
        base = self._map_records + stripe * self._stripe_bytes
        key_end = _KEY + klen
        i = (h >> self.shift) % slots
        for _ in range(slots):
            off = base + i * rs
            record = mapping[off : off + rs]
            if not record[0]:  # used
                return None
            # The key length (u16 at 2), then the key: no other key has both.
            if record[2] | record[3] << 8 == klen and record[_KEY:key_end] == key:
                return record
            i = i + 1 if i + 1 < slots else 0
        return None

    def count(self) -> int:
        """The sum of the per-stripe counts, read without locks (see StripedTable.count)."""
        words = _STRIPE.size // 4
        counts = struct.unpack_from(f"<{words * self.n_stripes}I", self.buf, TABLE_HEADER.size)
        return sum(counts[0::words])

    # -- everything below runs with the stripe lock held -------------------------------------

    def enter(self, stripe: int) -> None:
        """Repair what a writer killed inside this stripe left behind; call first when locked."""
        busy = BUSY.unpack_from(self.buf, stripe_header(stripe) + 4)[0]
        if busy:
            self._repair(stripe, busy - 1)
        if VERSION.unpack_from(self.buf, stripe_header(stripe) + VERSION_AT)[0] & 1:
            self._end_write(stripe)  # a writer died after its changes, before this

    def _begin_write(self, stripe: int) -> None:
        versions, at = self.versions, self.version_index(stripe)
        version: int = versions[at]
        if not version & 1:
            versions[at] = version + 1

    def _end_write(self, stripe: int) -> None:
        versions, at = self.versions, self.version_index(stripe)
        version: int = versions[at] | 1
        versions[at] = (version + 1) & _VERSION_WRAP

    def put(self, stripe: int, h: int, key: bytes, record: bytes) -> bool:
        """Insert or replace key's whole `record`; False when the stripe is full."""
        self.enter(stripe)
        off = self.find(stripe, h, key)
        hdr = stripe_header(stripe)
        if off == -1:
            return False  # stripe full, key absent
        count = _STRIPE.unpack_from(self.buf, hdr)[0]
        if off < 0:
            off = -1 - off
            count += 1
        self._begin_write(stripe)
        self._store32(hdr + 4, (off - self.base(stripe)) // self.rs + 1)
        self.buf[off : off + self.rs] = record
        self._store32(hdr, count)
        self._store32(hdr + 4, 0)
        self._end_write(stripe)
        return True

    def value_at(self, off: int) -> bytes:
        """The value of the record at `off`."""
        value: bytes = self._value.unpack_from(self.buf, off + self._voff)[0]
        return value

    def head_at(self, off: int, head: struct.Struct) -> tuple[Any, ...]:
        """The leading fields of the value of the record at `off`."""
        return head.unpack_from(self.buf, off + self._voff)

    def remove(self, stripe: int, off: int) -> None:
        """Delete the record at `off` (found by `find`)."""
        self._remove_at(stripe, (off - self.base(stripe)) // self.rs)

    def _remove_at(self, stripe: int, hole: int) -> None:
        """Backward-shift delete of slot `hole`; busy always names the current hole."""
        buf, rs, slots, shift = self.buf, self.rs, self.slots, self.shift
        base, busy = self.base(stripe), stripe_header(stripe) + 4
        self._begin_write(stripe)
        self._store32(busy, hole + 1)
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
            self._store32(busy, hole + 1)
        buf[base + hole * rs] = 0
        count = _STRIPE.unpack_from(buf, busy - 4)[0]
        self._store32(busy - 4, max(count - 1, 0))
        self._store32(busy, 0)
        self._end_write(stripe)

    def _repair(self, stripe: int, suspect: int) -> None:
        """A writer died inside this stripe: drop its slot, restore the probe runs, recount."""
        if not 0 <= suspect < self.slots:
            suspect = 0  # garbage in busy: a no-op shift from slot 0, then recount
        self._remove_at(stripe, suspect)
        base, rs = self.base(stripe), self.rs
        used = sum(1 for i in range(self.slots) if self.buf[base + i * rs])
        self._store32(stripe_header(stripe), used)
        self._store32(stripe_header(stripe) + 4, 0)

    def remove_where(self, stripe: int, head: struct.Struct, pred: Predicate) -> int:
        """Remove the records whose pred(head.unpack_from(value)) is true; how many."""
        # After a removal slot i is examined again: the shift may have moved a record into it.
        # A shift only moves records backward within their run, so none skips the cursor.
        buf, rs, voff = self.buf, self.rs, self._voff
        base, removed, i = self.base(stripe), 0, 0
        while i < self.slots:
            off = base + i * rs
            if buf[off] and pred(head.unpack_from(buf, off + voff)):
                self._remove_at(stripe, i)
                removed += 1
            else:
                i += 1
        return removed

    def items(self, stripe: int) -> list[tuple[bytes, bytes]]:
        buf, rs = self.buf, self.rs
        base = self.base(stripe)
        out: list[tuple[bytes, bytes]] = []
        for i in range(self.slots):
            off = base + i * rs
            if buf[off]:
                klen = _SLOT.unpack_from(buf, off)[1]
                key = bytes(buf[off + _KEY : off + _KEY + klen])
                out.append((key, self.value_at(off)))
        return out

    def verify(self, stripe: int) -> list[str]:
        """The stripe's broken invariants (hash, stripe, duplicates, probe paths, count)."""
        buf, rs, slots = self.buf, self.rs, self.slots
        base = self.base(stripe)
        seen: set[bytes] = set()
        problems: list[str] = []
        for i in range(slots):
            off = base + i * rs
            used, klen, kh = _SLOT.unpack_from(buf, off)
            if not used:
                continue
            key = bytes(buf[off + _KEY : off + _KEY + klen])
            if kh != zlib.crc32(key) or kh & self.mask != stripe or key in seen:
                problems.append(f"stripe {stripe} slot {i}: bad hash, stripe or duplicate")
            seen.add(key)
            j = (kh >> self.shift) % slots
            while j != i and buf[base + j * rs]:
                j = j + 1 if j + 1 < slots else 0
            if j != i:
                problems.append(f"stripe {stripe} slot {i}: empty slot {j} on its probe path")
        count = _STRIPE.unpack_from(buf, stripe_header(stripe))[0]
        if count != len(seen):
            problems.append(f"stripe {stripe}: count {count}, {len(seen)} records")
        return problems
