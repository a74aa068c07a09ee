"""Stats: per-process counters in shared memory; readers add the slots up.

Strategy:
- A worker counts in a local StatsCounters (a list indexed by the Counter IntEnum, so the hot
  path is one list item increment) and publish()es the whole array to its slot about once a
  second. One writer per slot, so no lock: each slot is a seqlock (seqlock.py).
- Published values are totals since that process started; `conns_open` and
  `cluster_redis_up` (the cluster agent's: 1 while Redis answers) and
  `cluster_users_left_out` (the agent's: users not in shm/remoteusers.py for want of room) are
  gauges (the current
  number), every other counter only grows.
- retire(index): when the supervisor has reaped a process, its monotonic counters move into a
  "retired" slot and its slot is zeroed, so totals never go down when a worker is replaced.
- reset(): the supervisor stores every slot's current values as a baseline; readers report
  value - baseline. Nothing is zeroed, so reset never races a worker's publish. (If a slot is
  reused without retire(), a value below its baseline is reported as is.)
- reset() and retire() write only the supervisor-owned part of the region: call them from one
  process (the supervisor).
- Layout: 2 * (capacity + 1) blocks of (seq u64 + one u64 per counter) = 464 bytes: the process
  slots, the retired slot, then one baseline block for each of those.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from .region import Region
from .seqlock import SEQ_SIZE, seq_read, write_begin, write_end
from .tally import Tally

__all__ = ["COUNTERS", "GAUGES", "STATS_RECORD", "Counter", "Stats", "StatsCounters"]

Counter = IntEnum(
    "Counter",
    (
        "frames_in_send",
        "frames_in_report",
        "frames_in_auth",
        "frames_in_other",
        "frames_in_response",
        "frames_out",
        "replies_2xx",
        "replies_4xx",
        "replies_5xx",
        "bytes_in",
        "bytes_out",
        "conns_open",
        "conns_total",
        "handoffs_out",
        "handoffs_in",
        "handoff_gone",
        "auth_ok",
        "auth_fail",
        "relay_fail",
        "errors",
        "invalid_frames",
        "conns_passed",
        "conns_adopted",
        "conns_moved",
        "responses_dropped",
        "connects_out",
        "connects_failed",
        "head_timeouts",
        "loops_refused",
        "tx_unmatched",
        "tx_timeouts",
        "tx_refused",
        "tx_hop_closed",
        "limit_addr_conns",
        "limit_unauth_conns",
        "limit_banned",
        "limit_bans",
        "limit_probation",
        "limit_auth_failures",
        "limit_user_sessions",
        "limit_outbound",
        "limit_rate",
        "limit_user_rate",
        "conns_ws",
        "conns_wss",
        "users_cache_hits",
        "users_db_lookups",
        "users_db_failures",
        "users_unavailable",
        "cluster_redis_up",
        "cluster_redis_lost",
        "cluster_auth_failures",
        "cluster_bans_out",
        "cluster_bans_in",
        "cluster_reports_dropped",
        "cluster_bad_input",
        "cluster_users_left_out",
        "cluster_forwarded",
        "cluster_lookups",
        "cluster_lookup_failures",
        "cluster_lookups_refused",
    ),
    start=0,
)
"""Index of each counter in StatsCounters.values (the names are written once, here)."""

COUNTERS: Final[tuple[str, ...]] = tuple(Counter.__members__)
GAUGES: Final = frozenset({"conns_open", "cluster_redis_up", "cluster_users_left_out"})
_BODY: Final = struct.Struct(f"<{len(COUNTERS)}Q")
_BLOCK: Final = SEQ_SIZE + _BODY.size
STATS_RECORD: Final = _BLOCK
_GAUGE_AT: Final = tuple(name in GAUGES for name in COUNTERS)
_TALLIED: Final = int(Counter.frames_in_send)
"""Where Tally.take()'s counts go: frames_in_send and the ten after it, in that order."""


class StatsCounters:
    """A worker's own counters: `counters.add(Counter.errors)`; the eleven every frame moves
    (frames_in_send ... bytes_out) counted in `tally`, natively (tally.py, workers/counting.py)
    and added into `values` by fold(). So those are read through fold() or as_dict(), never
    `values` alone."""

    __slots__ = ("tally", "values")

    def __init__(self) -> None:
        self.values = [0] * len(COUNTERS)
        self.tally = Tally()

    def add(self, counter: Counter, n: int = 1) -> None:
        self.values[counter] += n

    def fold(self) -> list[int]:
        """`values`, the tally added in: what is published or read."""
        values = self.values
        for at, n in enumerate(self.tally.take(), _TALLIED):
            values[at] += n
        return values

    def as_dict(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self.fold(), strict=True))


def _since(values: tuple[int, ...], base: tuple[int, ...]) -> list[int]:
    return [
        v if gauge or v < b else v - b for v, b, gauge in zip(values, base, _GAUGE_AT, strict=True)
    ]


class Stats:
    """Counter slots for `capacity` processes."""

    SUFFIX = "stats"
    TAG = b"stats/2"

    def __init__(self, region: Region, capacity: int) -> None:
        # Use create() or attach().
        self.region = region
        self.capacity = capacity
        self._buf = region.buf
        self._retired = capacity

    @classmethod
    def region_name(cls, prefix: str) -> str:
        return f"{prefix}-{cls.SUFFIX}"

    @staticmethod
    def region_size(capacity: int) -> int:
        return 2 * (capacity + 1) * _BLOCK

    @classmethod
    def create(cls, prefix: str, capacity: int) -> Stats:
        """Create the region, every counter zero (supervisor, before fork)."""
        size = cls.region_size(capacity)
        return cls(Region.create(cls.region_name(prefix), size, cls.TAG), capacity)

    @classmethod
    def attach(cls, prefix: str, capacity: int) -> Stats:
        """Attach (worker, after fork). Raises ShmLayoutError on another layout or capacity."""
        size = cls.region_size(capacity)
        return cls(Region.attach(cls.region_name(prefix), cls.TAG, size), capacity)

    def _check(self, index: int) -> int:
        if not 0 <= index < self.capacity:
            raise IndexError(f"stats index {index} outside 0..{self.capacity - 1}")
        return index

    def _read(self, block: int) -> tuple[int, ...]:
        return seq_read(self._buf, block * _BLOCK, _BODY)[0]

    def _write(self, block: int, values: list[int] | tuple[int, ...]) -> None:
        off = block * _BLOCK
        odd = write_begin(self._buf, off)
        _BODY.pack_into(self._buf, off + SEQ_SIZE, *values)
        write_end(self._buf, off, odd)

    def _slot_since_reset(self, block: int) -> list[int]:
        return _since(self._read(block), self._read(self.capacity + 1 + block))

    def publish(self, index: int, counters: StatsCounters) -> None:
        """Worker: copy its counters to slot `index` (values must be 0..2**64-1)."""
        self._write(self._check(index), counters.fold())

    def per_slot(self) -> dict[int, dict[str, int]]:
        """Counters of each process slot since the last reset()."""
        return {
            i: dict(zip(COUNTERS, self._slot_since_reset(i), strict=True))
            for i in range(self.capacity)
        }

    def slot(self, index: int) -> dict[str, int]:
        """Counters of one process slot since the last reset()."""
        return dict(zip(COUNTERS, self._slot_since_reset(self._check(index)), strict=True))

    def total(self) -> dict[str, int]:
        """All slots plus the retired processes, since the last reset()."""
        sums = self._slot_since_reset(self._retired)
        for i in range(self.capacity):
            sums = [a + b for a, b in zip(sums, self._slot_since_reset(i), strict=True)]
        return dict(zip(COUNTERS, sums, strict=True))

    def reset(self) -> None:
        """Supervisor: make every counter read zero from now on (gauges are not affected)."""
        for block in range(self.capacity + 1):
            self._write(self.capacity + 1 + block, self._read(block))

    def retire(self, index: int) -> None:
        """Supervisor, after reaping slot `index`'s process: fold its counters into the total."""
        slot, base = self._check(index), self.capacity + 1 + index
        retired, retired_base = self._retired, self.capacity + 1 + self._retired
        values, since = self._read(slot), self._read(base)
        grow = [0 if gauge else v for v, gauge in zip(values, _GAUGE_AT, strict=True)]
        grow_base = [0 if gauge else v for v, gauge in zip(since, _GAUGE_AT, strict=True)]
        self._write(retired, [a + b for a, b in zip(self._read(retired), grow, strict=True)])
        old_base = self._read(retired_base)
        self._write(retired_base, [a + b for a, b in zip(old_base, grow_base, strict=True)])
        zeros = [0] * len(COUNTERS)
        self._write(slot, zeros)
        self._write(base, zeros)

    def close(self) -> None:
        self.region.close()

    def unlink(self) -> None:
        self.region.unlink()
