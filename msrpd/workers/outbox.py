"""Outbox: everything one connection writes, from the first write to the transport's write.

Rules:
- Frames never interleave: while a streamed frame is written, frames from other sources
  wait behind it (gate.py, RFC 4975 §7.1); a SEND chunk that frames wait behind is cut at
  its next body piece so that they go first (interrupt.py, RFC 4975 §7.1.1).
- Batched: everything written during one read's work (its replies and relayed frames, a
  handoff batch) leaves in one write at the end of it (`Flusher`, DESIGN §3, issue 7);
  big pieces as they are (a writev), not joined first (issue 16).
- Back-pressure: more than WRITE_HIGH waiting pauses the sources that write here (flow.py).
- Every relayed frame not yet in the kernel is in the sent log, so a stop can report it to
  its sender (sentlog.py, RFC 4975 §7.1.2).
- A connection just moved here holds what its old worker did not forward until RELEASE
  (`hold`, hold.py); what is held counts toward its congestion.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Final

from ..shm.tally import Tally
from .connstats import ConnStats
from .flow import FlowControl, link_of
from .gate import FrameGate, Write
from .hold import HeldWrite, Hold
from .interrupt import interrupt
from .ports import WRITE_HIGH, Blockable
from .sentlog import SentLog, Unsent
from .transports.base import ChunkIds, Wire

__all__ = ["Flusher", "Outbox"]

_TRIM_AT: Final = 8
_TRIM_BYTES: Final = 32768
"""A flush this big trims the sent log whatever it holds: what it keeps alive stays small."""
_WRITEV_MIN: Final = 2048
"""Pieces of this many bytes on average are handed to the wire as they are (one writev over
TCP), smaller ones joined: copying a few hundred bytes costs less than an iovec each."""


class Flusher:
    """What flushes a dirty outbox when the current read's work ends (batch.WriteBatch, its
    one subclass). A base class, not a callable: compiled, queue() is then a native call
    (a bound method was a generic one, ~200 instructions a write, issue 16)."""

    __slots__ = ()

    def queue(self, out: Outbox) -> None:
        raise NotImplementedError


class Outbox:
    __slots__ = (
        "close_when_flushed",
        "closed",
        "flow",
        "flush_queued",
        "flusher",
        "gate",
        "hold",
        "owner",
        "pending",
        "pending_bytes",
        "sent_log",
        "stats",
        "tally",
        "wire",
        "write_paused",
    )

    def __init__(
        self,
        owner: object,
        wire: Wire,
        stats: ConnStats,
        flow: FlowControl,
        flusher: Flusher,
        tally: Tally,
        chunk_ids: ChunkIds | None = None,
    ) -> None:
        """`flusher.queue(outbox)` has flush() called when the current read's work ends;
        `tally` is the worker's (bytes_out is added to); `chunk_ids` names the
        chunk that goes on after one is cut for what waits behind it (interrupt.py)."""
        self.owner = owner
        """The connection it writes for: flow control never pauses it for its own writes."""
        self.wire = wire
        self.stats = stats
        self.flow = flow
        self.flusher = flusher
        self.tally = tally
        self.pending: list[bytes | memoryview] = []
        self.pending_bytes = 0
        self.flush_queued = False
        self.close_when_flushed = False
        self.closed = False
        self.sent_log = SentLog()
        self.gate = FrameGate(chunk_ids)
        self.write_paused = False
        """The transport asked us to stop writing (asyncio's pause_writing)."""
        self.hold: Hold | None = None
        """Just moved here: frames wait for the old worker's RELEASE (hold.py)."""

    def write_frame(
        self,
        data: bytes | memoryview,
        close_after: bool = False,
        *,
        source: Hashable = None,
        more: bool = False,
        forwarded: bool = False,
        reader: Blockable | None = None,
    ) -> bool:
        """Write a frame, or a piece of one (`more`); False when the connection is closed.
        While holding, only frames the old worker `forwarded` go out, the rest wait for
        RELEASE (hold.py). `reader` is the connection or link the frame is being read from:
        flow control pauses it while this connection is congested (flow.py)."""
        if self.closed:
            return False
        hold = self.hold
        if hold is None or forwarded:
            self.write(data, close_after, source, more)
        else:
            hold.add((data, close_after, source, more))
        if hold is not None and link_of(reader) is hold.release_link:
            return True  # RELEASE comes on this link: pausing it for what is held never ends
        if self.flow.active or self.congested:
            self.flow.check(self, source, reader)
        return True

    def take_held(self) -> list[HeldWrite]:
        """RELEASE, or a stop giving up: what was held back, in order; nothing is held from
        now on."""
        hold, self.hold = self.hold, None
        return [] if hold is None else hold.writes

    @property
    def held_bytes(self) -> int:
        hold = self.hold
        return 0 if hold is None else hold.nbytes

    def write(
        self, data: bytes | memoryview, close_after: bool, source: Hashable, more: bool
    ) -> None:
        """Write a frame, or a piece of one (`more`); frames from other sources wait while a
        streamed frame is written (gate.py)."""
        gate = self.gate
        if not more and gate.owner is None and not gate.held:
            self._put(data, close_after, source, False)  # the usual case: nothing streams
            self.stats.frames_out += 1
        else:
            if more and gate.held and source == gate.owner:  # a frame waits behind it
                self._puts(interrupt(gate, self.sent_log, self.stats.bytes_out, source))
            self._puts(gate.offer(Write(data, close_after, source, more)))

    def _puts(self, writes: list[Write]) -> None:
        for item in writes:
            self._put(item.data, item.close_after, item.source, item.more)
            self.stats.frames_out += not item.more

    def abandon(self, source: Hashable) -> None:
        """`source` (a handoff link's stream) will send no more: end its frame, if it is in
        the middle of one, and write what waited behind it (gate.py)."""
        if self.closed or source not in self.gate.open:
            return
        self._puts(self.gate.abandon(source))
        self.flow.check(self)

    def _put(
        self, data: bytes | memoryview, close_after: bool, source: Hashable, more: bool
    ) -> None:
        size = len(data)
        stats = self.stats
        stats.bytes_out += size
        if source is not None:  # relayed: what a stop must report if it is never sent
            log = self.sent_log
            log.relayed = True
            if more or log.streams:
                log.note(stats.bytes_out, source, data, more)
            else:
                log.records.append((stats.bytes_out, source, data))
        self.tally.bytes_out += size
        self.pending.append(data)
        self.pending_bytes += size
        if close_after:
            self.close_when_flushed = True
            stats.closing("closed after relay (flag 2)")
        if not self.flush_queued and self.wire.transport is not None:
            self.flush_queued = True
            self.flusher.queue(self)

    def flush(self) -> None:
        """Hand what is pending to the wire (the WriteBatch calls this, batch.py)."""
        self.flush_queued = False
        wire = self.wire
        if wire.transport is None or self.closed:
            return
        pending = self.pending
        if pending:
            size = self.pending_bytes
            if len(pending) == 1:
                wire.send(pending[0])
            elif size >= len(pending) * _WRITEV_MIN:
                wire.send_all(pending)  # big pieces: not copied into one first (issue 16)
            else:
                wire.send(b"".join(pending))
            self.pending = []
            self.pending_bytes = 0
            # Trimming asks the transport what it holds (a generic call): not after every
            # flush. Up to _TRIM_AT small frames wait for a later one, or housekeeping's tick.
            if len(self.sent_log.records) > _TRIM_AT or size > _TRIM_BYTES:
                self.trim_sent()
        if self.close_when_flushed:
            wire.close()
        elif self.flow.active:
            self.flow.check(self)  # what was pending may have left: resume its sources

    def trim_sent(self) -> None:
        """Forget the relayed frames whose last byte the transport has passed to the kernel."""
        sent = self.stats.bytes_out - self.pending_bytes - self.wire.buffered()
        self.sent_log.trim(sent)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.flow.check(self)

    @property
    def congested(self) -> bool:
        """More than the high-water mark waits to go out: sources should stop reading."""
        waiting = self.gate.held_bytes + self.pending_bytes + self.held_bytes
        return self.write_paused or waiting > WRITE_HIGH

    @property
    def backlogged(self) -> bool:
        """Congested without counting what waits behind a streamed frame (flow.py)."""
        return self.write_paused or self.pending_bytes + self.held_bytes > WRITE_HIGH

    @property
    def buffered(self) -> int:
        """Bytes written and not in the kernel yet: pending here or in the transport."""
        return self.pending_bytes + self.wire.buffered()

    @property
    def streaming(self) -> bool:
        """Frames wait in the gate, or a streamed frame is half written."""
        gate = self.gate
        return bool(gate.held) or gate.owner is not None

    @property
    def settled(self) -> bool:
        """Attached, and nothing to write or waiting: no close pending, no streamed frame
        half written or frame held behind one, no source paused, nothing pending here or in
        the transport (a connection may move to another worker, migrate/colocate.py)."""
        gate = self.gate
        return (
            self.wire.transport is not None
            and not self.close_when_flushed
            and gate.owner is None
            and not gate.held
            and not self.flow.blocked
            and not self.pending
            and not self.wire.buffered()
        )

    @property
    def unsent(self) -> bool:
        """Output not (wholly) in the kernel yet: queued here, in the transport, held in the
        gate or for RELEASE, or a streamed frame half written."""
        return bool(self.buffered or self.streaming or self.sent_log.streams) or (
            self.hold is not None
        )

    @property
    def unsent_relayed(self) -> bool:
        """A relayed frame is among what has not reached the kernel (give_up drops it)."""
        self.trim_sent()
        log, hold = self.sent_log, self.hold
        return bool(log.records or log.streams or self.streaming) or (
            hold is not None and bool(hold.writes)
        )

    def held_sources(self) -> Iterator[Hashable]:
        """The sources of the relayed frames not (wholly) passed to the kernel yet: the sent
        log's, the gate's, those held for RELEASE (HELD, held.py)."""
        self.trim_sent()
        log, hold = self.sent_log, self.hold
        for _, source, _ in log.records:
            yield source
        yield from log.streams
        for write in self.gate.held:
            yield write.source
        if hold is not None:
            for _, _, source, _ in hold.writes:
                yield source

    def give_up(self) -> list[Unsent]:
        """Drop everything not in the kernel yet, and return the relayed frames among it: the
        sent log's, the gate's and those held for RELEASE (written after them). The wire is
        shut for writing first: a frame returned here is reported to its sender, so no byte of
        it may reach the peer after (RFC 4975 §7.1.2; the loop's abort would let the
        transport's buffer out while the peer reads, transports/base.py)."""
        self.wire.shut_write()
        self.trim_sent()
        unsent = self.sent_log.take()
        held = [(w.source, w.data, w.more) for w in self.gate.held]
        held.extend((source, data, more) for data, _, source, more in self.take_held())
        streaming = {self.gate.owner}  # its head is in the log already
        for source, data, more in held:
            if source is None or source in streaming:
                if not more:
                    streaming.discard(source)
                continue
            unsent.append((source, data))
            if more:
                streaming.add(source)
        self.drop()
        self.closed = True  # its sources go on when the connection is lost
        return unsent

    def shut(self, drop: bool = False) -> None:
        """The connection is closed: nothing more goes to the wire (`drop`: nor stays here),
        and the sources it paused go on."""
        self.closed = True
        if drop:
            self.drop()
        self.flow.release_all(self)

    def drop(self) -> None:
        """Let go of what waits here (the connection will never write it)."""
        self.pending, self.pending_bytes = [], 0
        self.gate = FrameGate(self.gate.chunk_ids)
