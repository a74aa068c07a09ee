"""Intake: when one connection reads, the counterpart of its Outbox.

Rules:
- Back-pressure (flow.py): a destination congested by what the connection relays pauses its
  reading (`block`); it reads again once every such destination has drained (`unblock`).
- Session rates ([limits], limits.py): a client connection over them is blocked by its
  ReadRate until the buckets allow it again, as by a congested destination.
- A frame whose route needs a value that is not here yet (routing/waits.py) waits in
  `waiting`, reading paused with the value as its blocker (so head_timeout and migration leave
  the connection alone): the frames after it stay in the reader and the kernel, in order,
  until it has been routed (conn.py: wait_for, _waited).
- `halted` says why the reader's next frames wait (conn.py stops routing them): RATE, WAIT or
  both; one test of it per frame covers both.
- head_timeout (slowloris): every byte refreshes last_active, so only a deadline per head
  ends a connection that never completes one. The clock starts when a new head begins
  (conn.py, after each read) and again when reading resumes after a pause: paused is not slow.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Final

from ..protocol import Frame, FrameReader
from .batch import WriteBatch
from .ratelimit import ReadRate
from .stopstate import StopState
from .transports.base import Wire

__all__ = ["RATE", "WAIT", "Intake"]

RATE: Final = 1
"""halted: over its session rates ([limits], limits.py)."""
WAIT: Final = 2
"""halted: a frame waits for a value (`waiting`)."""


class Intake:
    __slots__ = (
        "batch",
        "blockers",
        "halted",
        "held_replies",
        "rate",
        "reader",
        "serial",
        "since",
        "stop",
        "waiting",
        "wire",
    )

    def __init__(self, wire: Wire, reader: FrameReader, batch: WriteBatch, stop: StopState) -> None:
        self.wire = wire
        self.reader = reader
        self.batch = batch
        """The worker's write batch: what routing a read writes goes out at its end."""
        self.stop = stop
        """The worker's graceful stop: no new frame is read once it has begun."""
        self.blockers: set[Hashable] = set()
        """The destinations (connections, handoff links) whose congestion pauses reading."""
        self.serial = 0
        """The head being read (reader.head_serial)..."""
        self.since = 0.0
        """...and when it began (monotonic)."""
        self.rate: ReadRate | None = None
        """A client connection's [limits] session rates (limits.py)."""
        self.halted = 0
        """RATE | WAIT: the reader's next frames wait (conn.py), reading paused."""
        self.waiting: Frame | None = None
        """The frame whose route waits for a value (WAIT)."""
        self.held_replies: list[tuple[bytes, bool]] | None = None
        """Answers to the streamed frame being read, written when its end-line is in (None:
        answers go out at once): a response says the whole chunk arrived (RFC 4976 §6.4.1)."""

    def block(self, dest: Hashable, pause: bool) -> None:
        """`dest` is congested by what we relay; `pause`: the wire is open, stop reading."""
        if not self.blockers and pause:
            self.wire.pause_reading()
        self.blockers.add(dest)

    def unblock(self, dest: Hashable, resume: bool) -> None:
        """`dest` has drained; `resume`: read again if nothing else blocks (the connection
        is open and may read)."""
        self.blockers.discard(dest)
        if resume and not self.blockers and self.wire.transport is not None:
            self.restart()
            self.wire.resume_reading()

    def restart(self) -> None:
        """Reading resumes: the head being read gets a new head_timeout."""
        self.since = time.monotonic()

    def overdue(self, began_before: float) -> bool:
        """The head being read began before `began_before`, is not complete yet, and nothing
        paused reading meanwhile."""
        reader = self.reader
        return (
            self.since < began_before
            and reader.in_head
            and reader.head_serial == self.serial
            and not self.blockers
        )
