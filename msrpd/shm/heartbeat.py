"""Heartbeats: one shared record per process slot, written by its worker, read by the supervisor.

Rules (style rule 14, gunicorn's WorkerTmp moved into shm):
- The supervisor claim()s a slot for a process it forked (right after fork) and release()s it
  after reaping; the worker beat()s about once a second. beat() writes only state, beat and
  conns, so it never undoes what claim() wrote; if a first beat races the claim, the claim's
  BOOTING stands until the next beat.
- beat is time.monotonic_ns(): CLOCK_MONOTONIC is system-wide on Linux, so values compare
  across processes (not across reboots).
- Each record is a seqlock (seqlock.py): read() never blocks a writer and reports a copy that
  could be torn as consistent=False. A monitor can act on it anyway: the fields are each
  whole values, only possibly from two different beats.
- Record: seq u64, pid u32, generation u32, conns u32, slot u16, state u8, pad, beat u64,
  serials u64 = 40 bytes.
- serials is outside the seqlock: the connection-id serials below it may be in use by the
  record's process (workers/conids.py). The supervisor sets it before fork, the worker raises
  it before it uses a serial, the supervisor reads it after reaping, to start the successor
  above it (a connection id is never reused, issue 12). Each access is one aligned 8-byte
  load or store, so it reads whole even from a worker killed in the middle of a beat.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from .region import Region
from .seqlock import SEQ_SIZE, seq_read, write_begin, write_end

__all__ = ["HEARTBEAT_RECORD", "HeartbeatRecord", "Heartbeats", "WorkerState"]

HEARTBEAT_RECORD: Final = 40
_BODY: Final = struct.Struct("<IIIHBxQ")  # pid, generation, conns, slot, state, beat
_CONNS: Final = struct.Struct("<I")
_STATE: Final = struct.Struct("<B")
_BEAT: Final = struct.Struct("<Q")
_CONNS_AT: Final = SEQ_SIZE + 8
_STATE_AT: Final = SEQ_SIZE + 14
_BEAT_AT: Final = SEQ_SIZE + 16
# Native: one aligned 8-byte memcpy (as seqlock._SEQ); records are 40 bytes, so it stays aligned.
_SERIALS: Final = struct.Struct("@Q")
_SERIALS_AT: Final = SEQ_SIZE + 24
_PIDS: Final = struct.Struct(f"<{SEQ_SIZE}xI{HEARTBEAT_RECORD - SEQ_SIZE - 4}x")  # pid only


class WorkerState(IntEnum):
    FREE = 0
    BOOTING = 1
    RUNNING = 2
    DRAINING = 3
    EXITING = 4
    """Retired and about to exit: other workers no longer fence it (workers/migrate/handover.py)."""


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    index: int
    pid: int
    slot: int
    """Worker slot (which SO_REUSEPORT socket it serves)."""
    generation: int
    state: WorkerState
    beat: int
    """time.monotonic_ns() of the last beat (or of the claim)."""
    conns: int
    """Open connections at the last beat."""
    consistent: bool = True
    """False when the copy may mix two writes (see the module docstring)."""


class Heartbeats:
    """`capacity` heartbeat records in one region."""

    SUFFIX = "heartbeats"
    TAG = b"heartbeat/2"

    def __init__(self, region: Region, capacity: int) -> None:
        # Use create() or attach().
        self.region = region
        self.capacity = capacity
        self._buf = region.buf

    @classmethod
    def region_name(cls, prefix: str) -> str:
        return f"{prefix}-{cls.SUFFIX}"

    @staticmethod
    def region_size(capacity: int) -> int:
        return capacity * HEARTBEAT_RECORD

    @classmethod
    def create(cls, prefix: str, capacity: int) -> Heartbeats:
        """Create the region, every slot FREE (supervisor, before fork)."""
        size = cls.region_size(capacity)
        return cls(Region.create(cls.region_name(prefix), size, cls.TAG), capacity)

    @classmethod
    def attach(cls, prefix: str, capacity: int) -> Heartbeats:
        """Attach (worker, after fork). Raises ShmLayoutError on another layout or capacity."""
        size = cls.region_size(capacity)
        return cls(Region.attach(cls.region_name(prefix), cls.TAG, size), capacity)

    def _offset(self, index: int) -> int:
        if not 0 <= index < self.capacity:
            raise IndexError(f"heartbeat index {index} outside 0..{self.capacity - 1}")
        return index * HEARTBEAT_RECORD

    def claim(self, index: int, pid: int, slot: int, generation: int) -> None:
        """Supervisor: give record `index` to a new process, state BOOTING, beat now."""
        off = self._offset(index)
        odd = write_begin(self._buf, off)
        now = time.monotonic_ns()
        _BODY.pack_into(
            self._buf, off + SEQ_SIZE, pid, generation, 0, slot, WorkerState.BOOTING, now
        )
        write_end(self._buf, off, odd)

    def release(self, index: int) -> None:
        """Supervisor: the process of record `index` is reaped; mark the record FREE."""
        off = self._offset(index)
        odd = write_begin(self._buf, off)
        _BODY.pack_into(self._buf, off + SEQ_SIZE, 0, 0, 0, 0, WorkerState.FREE, 0)
        write_end(self._buf, off, odd)
        _SERIALS.pack_into(self._buf, off + _SERIALS_AT, 0)

    def reserve_serials(self, index: int, mark: int) -> None:
        """Serials below `mark` may be in use by record `index`'s process: the supervisor's
        start value before fork, then the worker's, before it uses any of them."""
        _SERIALS.pack_into(self._buf, self._offset(index) + _SERIALS_AT, mark)

    def serial_mark(self, index: int) -> int:
        """The last reserve_serials() value of record `index` (0 after release)."""
        return int(_SERIALS.unpack_from(self._buf, self._offset(index) + _SERIALS_AT)[0])

    def beat(self, index: int, state: WorkerState, conns: int, now_ns: int | None = None) -> None:
        """Worker: record that it is alive, its state and its open connections."""
        off = self._offset(index)
        beat = time.monotonic_ns() if now_ns is None else now_ns
        buf = self._buf
        odd = write_begin(buf, off)
        _CONNS.pack_into(buf, off + _CONNS_AT, conns)
        _STATE.pack_into(buf, off + _STATE_AT, state)
        _BEAT.pack_into(buf, off + _BEAT_AT, beat)
        write_end(buf, off, odd)

    def set_conns(self, index: int, conns: int) -> None:
        """Worker: its open connections, on every open and close (accept balancing)."""
        off = self._offset(index)
        buf = self._buf
        odd = write_begin(buf, off)
        _CONNS.pack_into(buf, off + _CONNS_AT, conns)
        write_end(buf, off, odd)

    def conns(self, index: int) -> int:
        """Open connections of record `index`: one aligned 4-byte load, no retry (a whole
        value, possibly a moment old)."""
        return int(_CONNS.unpack_from(self._buf, self._offset(index) + _CONNS_AT)[0])

    def read(self, index: int) -> HeartbeatRecord:
        """A copy of one record (lock-free; see `consistent`)."""
        (pid, gen, conns, slot, state, beat), ok = seq_read(self._buf, self._offset(index), _BODY)
        return HeartbeatRecord(index, pid, slot, gen, WorkerState(state), beat, conns, ok)

    def live(self) -> list[HeartbeatRecord]:
        """Copies of the records that name a process (pid != 0): one unlocked pass over the
        table to find them (under 0.1 ms for 1,024 records, against 1.6 ms for all()), then a
        seqlock read of each. Workers call it every second: it must not stall their loop."""
        table = self._buf[: self.capacity * HEARTBEAT_RECORD]
        return [self.read(index) for index, (pid,) in enumerate(_PIDS.iter_unpack(table)) if pid]

    def all(self) -> list[HeartbeatRecord]:
        """Copies of every record, FREE ones included."""
        return [self.read(i) for i in range(self.capacity)]

    def close(self) -> None:
        self.region.close()

    def unlink(self) -> None:
        self.region.unlink()
