"""MsrpConnection: the asyncio side of one MSRP connection, around the sans-IO FrameReader.

Strategy (uvicorn's h11_impl, kept thin): data_received feeds the reader and hands each event
to a small handler. The routing script runs on every frame. Only the owning worker writes to
this transport; other workers reach it through the handoff link (DESIGN §2).
- A frame whose body is over the whole-frame limit arrives as head, pieces, end: the script
  runs on the head, and the pieces follow to wherever relay() sent the head. Its answers wait
  for its end-line: a response says the whole chunk was received (RFC 4976 §6.4.1), and a
  client that reads only after writing the chunk (msrplib) would drop an early one.
- If the connection dies in the middle of a relayed streamed frame, the destination gets the
  end-line with flag "#" (RFC 4975 §7.1: the chunk is interrupted), so its framing stays sound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, cast

from ..protocol import (
    BodyPiece,
    ConnectionClosed,
    ConnInfo,
    Frame,
    FrameEnd,
    FrameReader,
    InvalidFrame,
    RemoteProtocolError,
    SipMessage,
    build_invalid_reply,
    invalid_gets_reply,
)
from ..protocol.grammar import DASHES
from ..protocol.writer import build_error_reply
from ..routing.sip import SipRequest
from ..shm import Counter
from .flow import FlowControl, link_of
from .gate import FrameGate, Write
from .migrate.state import Arrival, MigrationState
from .peers import format_peer, registry_key
from .ports import WRITE_HIGH, Blockable, Sink
from .routeenv import ConnEnv, RouteRunner
from .sentlog import SentLog, Unsent
from .stopstate import QUIET

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["MsrpConnection"]

logger = logging.getLogger(__name__)

BYTES_IN, BYTES_OUT = Counter.bytes_in, Counter.bytes_out


class MsrpConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound (accepted) or outbound (opened to a next hop)."""

    outbound = False
    """Opened by the relay to a next hop (delivery.py sets it), not accepted from a client."""

    listed = True
    """In the connection registry, so every worker reuses it; a retiring worker's links to
    next hops are not (retirelinks.py): the new generation opens its own."""

    held_replies: list[tuple[bytes, bool]] | None = None
    """Answers to the streamed frame being read, written when its end-line is in (set per
    frame by _on_frame; None: answers go out at once)."""

    def __init__(
        self,
        ctx: WorkerContext,
        routes: RouteRunner,
        local_sock: str,
        secure: bool,
        *,
        migration: MigrationState | None = None,
    ) -> None:
        self.ctx = ctx
        self.local_sock = local_sock
        self.secure = secure
        self.migration = MigrationState() if migration is None else migration
        """Balancing and colocation (migrate/): an outbound link's never moves."""
        self.arrival: Arrival | None = None
        """Just moved here: what it holds back until its handover is done (migrate/)."""
        self.reader = FrameReader(routes.limits)
        self.transport: asyncio.Transport | None = None
        self.conid = ctx.new_conid()
        self.info = ConnInfo("", local_sock, self.conid)
        self.env = ConnEnv(routes, self)
        self.peer_key = ""
        self.sessions: list[str] = []
        self.session_meta: dict[str, tuple[str, float]] = {}
        """sessid -> (user, wall-clock start), for the accounting line."""
        self.frames_in = self.frames_out = 0
        self.close_reason = ""
        self.opened = self.last_active = time.monotonic()
        self.closed = False
        self.pending: list[bytes | memoryview] = []
        self.pending_bytes = 0
        self.flush_queued = self.close_when_flushed = False
        self.sent_log = SentLog()
        self.stream_sink: Sink | None = None
        self.gate = FrameGate()
        self.flow = FlowControl()
        self.write_paused = False
        self.blockers: set[Hashable] = set()
        self.stream_tid = b""
        self.bytes_in = self.bytes_out = 0
        # The head being read (reader.head_serial) and when it began: head_timeout counts
        # from there (slowloris).
        self.head_serial, self.head_since = 0, 0.0

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        balancer = self.ctx.balancer
        if self.migration.balance and balancer is not None:
            listen = self.local_sock
            if balancer.offer(cast(asyncio.Transport, transport), len(self.ctx.conns), listen):
                self.migration.passed = self.closed = True  # another worker owns it now
                return
        if self.closed:  # given up by a stop while connecting (stopping.py)
            transport.abort()  # type: ignore[attr-defined]
            return
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        host, port = transport.get_extra_info("peername")[:2]
        peer = format_peer(host, port)
        self.peer_key = f"{'tls' if self.secure else 'tcp'}:{peer}"
        self.info = ConnInfo(
            f"msrp{'s' if self.secure else ''}://{peer}", self.local_sock, self.conid
        )
        self.ctx.connection_opened(self)
        arrival = self.arrival
        if arrival is not None and arrival.on_taken_over is not None:
            arrival.on_taken_over(self)
            arrival.on_taken_over = None
        if self.pending or self.close_when_flushed:
            self.flush()
        if arrival is not None and arrival.carried and not arrival.reading_held:
            carried, arrival.carried = arrival.carried, b""
            self.data_received(carried)

    def bytes_to_carry(self) -> bytes | None:
        """What its reader holds, for a new owner to read first, when it can move to another
        worker now (migrate/colocate.py): open, between frames, nothing waiting to be written
        to it or held back, no streamed frame going in or out, not paused; else None."""
        transport = self.transport
        gate = self.gate
        if (
            self.closed
            or transport is None
            or self.close_when_flushed
            or self.stream_sink is not None
            or gate.owner is not None
            or gate.held
            or self.blockers
            or self.flow.blocked
            or self.arrival is not None
            or self.pending
            or transport.get_write_buffer_size()
        ):
            return None
        return self.reader.detach()

    def hold_reading(self) -> None:
        """Moved here: process nothing it sends until start_reading() (migrate/handover.py)."""
        if self.arrival is not None:
            self.arrival.reading_held = True

    def start_reading(self) -> None:
        arrival = self.arrival
        if arrival is None:
            return
        arrival.reading_held = False
        if arrival.held is None:
            self.arrival = None  # released already: nothing is held back any more
        self.head_since = time.monotonic()
        if self.closed or self.transport is None:
            return
        if not self.blockers and self.may_read:
            self.transport.resume_reading()
        if arrival.carried:
            carried, arrival.carried = arrival.carried, b""
            self.data_received(carried)
        if arrival.eof_held:
            arrival.eof_held = False
            self.eof_received()  # the reader reports the close, and we close (_drain_events)

    def data_received(self, data: bytes) -> None:
        arrival = self.arrival
        if arrival is not None and arrival.reading_held:
            # uvloop starts reading after connection_made whatever it asked: keep the bytes
            # behind the carried ones and stop reading now.
            arrival.carried += data
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.last_active = time.monotonic()
        self.bytes_in += len(data)
        self.ctx.counters.values[BYTES_IN] += len(data)
        self.reader.receive_data(data)
        batch = self.ctx.batch
        batch.begin()
        try:
            self._drain_events()
        finally:
            batch.flush_now()
        reader = self.reader
        if reader.in_head and reader.head_serial != self.head_serial:
            self.head_serial = reader.head_serial
            self.head_since = self.last_active
        if self.migration.move_to is not None and self.ctx.mover is not None:
            self.ctx.mover.consider(self)

    def eof_received(self) -> bool | None:
        arrival = self.arrival
        if arrival is not None and arrival.reading_held:
            arrival.eof_held = True
            return True  # keep the transport: what came before the EOF is read first
        self.reader.receive_data(b"")
        self._drain_events()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.migration.passed:
            return
        self.closed = True
        if not self.close_reason:
            self.close_reason = f"error: {exc}" if exc else "closed by peer"
        self.flow.release_all(self)
        self.held_replies = None  # the chunk never ended: it is not answered
        if self.stream_sink is not None:
            end = b"\r\n" + DASHES + self.stream_tid + b"#\r\n"
            self.stream_sink.send(end, source=self.conid)
            self.stream_sink = None
        self.ctx.connection_closed(self)

    # -- events -----------------------------------------------------------------------------

    def _drain_events(self) -> None:
        reader = self.reader
        stop = self.ctx.stop
        if stop.stopping and self.stream_sink is None:
            self.stop_reading()  # graceful stop: no new frame (what arrived stays unread)
            return
        try:
            for event in reader.events():
                if isinstance(event, Frame):
                    self._on_frame(event)
                elif isinstance(event, BodyPiece):
                    if self.stream_sink is not None:
                        self.stream_sink.send(event.data, source=self.conid, more=True)
                elif isinstance(event, FrameEnd):
                    self._on_frame_end(event)
                elif isinstance(event, InvalidFrame):
                    self._on_invalid(event)
                elif isinstance(event, SipMessage):
                    self._on_sip(event)
                elif isinstance(event, ConnectionClosed):
                    self.close("closed by peer")
                if self.closed:
                    break
                if stop.stopping and self.stream_sink is None:
                    self.stop_reading()  # the frame being read when the stop came is done
                    break
        except RemoteProtocolError as exc:
            # Framing is lost (no transaction id, bare LF, head over the cap): close (DESIGN §8).
            logger.info("closing %s: %s", self.peer_key, exc)
            self.ctx.counters.add(Counter.errors)
            reply = build_error_reply(exc)
            if reply is not None:
                self.write_frame(reply)
            self.close(f"protocol error: {exc}")

    def _on_frame(self, frame: Frame) -> None:
        self.frames_in += 1
        self.ctx.count_frame_in(frame)
        if frame.streamed:
            self.held_replies = []
        sink = self.env.routes.run(frame, self)
        if frame.streamed:
            self.stream_sink = sink
            self.stream_tid = frame.tid

    def _on_frame_end(self, end: FrameEnd) -> None:
        if self.stream_sink is not None:
            self.stream_sink.send(end.raw, source=self.conid)
            self.stream_sink = None
        # The chunk is in, whatever its flag: "#" ends it too (RFC 4975 §7.1).
        held, self.held_replies = self.held_replies or [], None
        for data, close_after in held:
            self.write_frame(data, close_after)

    def write_reply(self, data: bytes, close_after: bool = False) -> None:
        """Answer the frame being routed: now, or once its end-line is in when it is streamed."""
        if self.held_replies is not None:
            self.held_replies.append((data, close_after))
        else:
            self.write_frame(data, close_after)

    def _on_invalid(self, invalid: InvalidFrame) -> None:
        self.ctx.counters.add(Counter.invalid_frames)
        logger.info("invalid frame %r from %s: %s", invalid.tid, self.peer_key, invalid.reason)
        if not invalid_gets_reply(invalid):
            return  # a response, a REPORT or Failure-Report: no: dropped (RFC 4975 §7.1.2)
        reply = build_invalid_reply(invalid, self._self_uri())
        if reply is None:
            self.close(f"unanswerable invalid frame: {invalid.reason}")
        else:
            self.write_frame(reply, False)

    def _self_uri(self) -> bytes:
        """This relay's URI as the peer reached it (the listening socket), b"" when outbound."""
        if not self.local_sock:
            return b""
        address = self.local_sock.partition(":")[2]
        return f"msrp{'s' if self.secure else ''}://{address};tcp".encode()

    def _on_sip(self, message: SipMessage) -> None:
        self.env.routes.run_sip(SipRequest(message.raw, self.write_frame, f"{self.conid:x}"))

    # -- writing ----------------------------------------------------------------------------

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
        """Write a frame, or a piece of one (`more`), to this connection; False when it is
        closed. Frames from other sources wait while a streamed frame is written (gate.py).
        Just after a move, only frames the old worker `forwarded` go out; the rest wait for
        release() (migrate/handover.py). `reader` is the connection or link the frame is being
        read from: flow control pauses it while this connection is congested (flow.py)."""
        if self.closed:
            return False
        arrival = self.arrival
        if arrival is None or arrival.held is None:
            self._write_now(data, close_after, source, more)
        else:
            if forwarded:
                self._write_now(data, close_after, source, more)
            else:
                arrival.held.append((data, close_after, source, more))
                arrival.held_bytes += len(data)
            if link_of(reader) is arrival.release_link:
                return True  # RELEASE comes on this link: pausing it for what is held never ends
        if self.flow.active or self.congested:
            self.flow.check(self, source, reader)
        return True

    def _write_now(
        self, data: bytes | memoryview, close_after: bool, source: Hashable, more: bool
    ) -> None:
        gate = self.gate
        if not more and gate.owner is None and not gate.held:
            self._write(data, close_after, source)  # the usual case: nothing streams, waits
            self.frames_out += 1
        else:
            for item in gate.offer(Write(data, close_after, source, more)):
                self._write(item.data, item.close_after, item.source, item.more)
                self.frames_out += not item.more

    def abandon(self, source: Hashable) -> None:
        """`source` (a handoff link's stream) will send no more: end its frame, if it is in
        the middle of one, and write what waited behind it (gate.py)."""
        if self.closed or source not in self.gate.open:
            return
        for item in self.gate.abandon(source):
            self._write(item.data, item.close_after, item.source, item.more)
            self.frames_out += not item.more
        self.flow.check(self)

    def release(self) -> None:
        """The old worker has forwarded everything: write what was held back, in order."""
        arrival, held = self.arrival, []
        if arrival is not None:
            held, arrival.held, arrival.held_bytes = arrival.held or [], None, 0
            arrival.release_link = None
            if not arrival.reading_held:
                self.arrival = None
        for data, close_after, source, more in held:
            self.write_frame(data, close_after, source=source, more=more)
        self.flow.check(self)

    def _write(
        self, data: bytes | memoryview, close_after: bool, source: Hashable, more: bool = False
    ) -> None:
        # Batched: everything written during one loop iteration (a read's replies and relayed
        # frames, a handoff batch) leaves in one transport write at the iteration's end.
        size = len(data)
        self.bytes_out += size
        if source is not None:  # relayed: what a stop must report if it is never sent
            log = self.sent_log
            log.relayed = True
            if more or log.streams:
                log.note(self.bytes_out, source, data, more)
            else:
                log.records.append((self.bytes_out, source, data))
        self.ctx.counters.values[BYTES_OUT] += size
        self.pending.append(data)
        self.pending_bytes += size
        if close_after:
            self.close_when_flushed = True
            self.close_reason = self.close_reason or "closed after relay (flag 2)"
        if not self.flush_queued and self.transport is not None:
            self.flush_queued = True
            self.ctx.batch.queue(self)

    def flush(self) -> None:
        """Hand what is pending to the transport (WriteBatch calls this)."""
        self.flush_queued = False
        transport = self.transport
        if transport is None or self.closed:
            return
        pending = self.pending
        if pending:
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            self.pending = []
            self.pending_bytes = 0
            if self.sent_log.records:
                self.trim_sent()
        if self.close_when_flushed:
            transport.close()
        elif self.flow.active:
            self.flow.check(self)  # what was pending may have left: resume its sources

    def trim_sent(self) -> None:
        """Forget the relayed frames whose last byte the transport has passed to the kernel."""
        transport = self.transport
        left = transport.get_write_buffer_size() if transport is not None else 0
        self.sent_log.trim(self.bytes_out - self.pending_bytes - left)

    @property
    def may_read(self) -> bool:
        """Not stopping, or finishing the streamed frame it was reading when the stop came."""
        stop = self.ctx.stop
        return not stop.stopping or (self.stream_sink is not None and not stop.given_up)

    def stop_reading(self) -> None:
        """Graceful stop: read no new frame (a streamed one being relayed is finished first,
        unless the stop has given up)."""
        if self.transport is not None and not self.closed and not self.may_read:
            self.transport.pause_reading()

    @property
    def unsent(self) -> bool:
        """Output not (wholly) in the kernel yet: queued here, in the transport, held back,
        or a streamed frame half written."""
        transport = self.transport
        buffered = self.pending_bytes + (transport.get_write_buffer_size() if transport else 0)
        gate = self.gate
        return bool(buffered or gate.held or gate.owner is not None or self.holding) or bool(
            self.sent_log.streams
        )

    @property
    def unsent_relayed(self) -> bool:
        """A relayed frame is among what has not reached the kernel (give_up drops it)."""
        self.trim_sent()
        log, gate = self.sent_log, self.gate
        held = self.arrival is not None and bool(self.arrival.held)
        return bool(log.records or log.streams or gate.held or held) or (gate.owner is not None)

    def give_up(self) -> list[Unsent]:
        """The stop's deadline is near: drop what has not reached the kernel, and return the
        relayed frames it held. uvloop's abort closes without SO_LINGER, so the bytes the
        kernel has still reach the peer, then a FIN: the peer gets exactly the frames its
        senders are not told are lost (RFC 4975 §7.1.2)."""
        self.trim_sent()
        unsent = self.sent_log.take()
        held = [(w.source, w.data, w.more) for w in self.gate.held]
        arrival = self.arrival
        if arrival is not None:
            held.extend((source, data, more) for data, _, source, more in arrival.held or ())
            arrival.held, arrival.held_bytes = None, 0
        streaming = {self.gate.owner}  # its head is in the log already
        for source, data, more in held:
            if source is None or source in streaming:
                if not more:
                    streaming.discard(source)
                continue
            unsent.append((source, data))
            if more:
                streaming.add(source)
        self.pending, self.pending_bytes = [], 0
        self.gate = FrameGate()
        self.closed = True  # nothing more is written: a later frame is refused, not dropped
        self.close_reason = self.close_reason or "relay stopping: unsent frames dropped"
        if self.transport is not None:
            self.transport.abort()
        return unsent

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.flow.check(self)

    @property
    def congested(self) -> bool:
        """More than the high-water mark waits to go out: sources should stop reading."""
        waiting = self.gate.held_bytes + self.pending_bytes
        arrival = self.arrival
        if arrival is not None:
            waiting += arrival.held_bytes
        return self.write_paused or waiting > WRITE_HIGH

    @property
    def backlogged(self) -> bool:
        """Congested without counting what waits behind a streamed frame (flow.py)."""
        arrival = self.arrival
        held = 0 if arrival is None else arrival.held_bytes
        return self.write_paused or self.pending_bytes + held > WRITE_HIGH

    @property
    def holding(self) -> bool:
        """Just moved here: frames wait for the old worker's RELEASE (migrate/handover.py)."""
        arrival = self.arrival
        return arrival is not None and arrival.held is not None

    @property
    def reading_held(self) -> bool:
        """Just moved here: reads nothing until MOVING (migrate/handover.py)."""
        arrival = self.arrival
        return arrival is not None and arrival.reading_held

    def block(self, dest: Hashable) -> None:
        """`dest` (a connection or a handoff link) is congested by what we relay: stop
        reading until it drains."""
        if not self.blockers and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.blockers.add(dest)

    def unblock(self, dest: Hashable) -> None:
        self.blockers.discard(dest)
        if self.reading_held:
            return
        if not self.blockers and self.transport is not None and not self.closed and self.may_read:
            self.head_since = time.monotonic()  # paused is not slow: a new head_timeout
            self.transport.resume_reading()

    def connect_failed(self, reason: str) -> None:
        """An outbound connect that never completed (asyncio calls no connection_lost): let
        go of what waits here and resume the sources it paused (issue 12)."""
        self.closed = True
        self.close_reason = self.close_reason or f"connect failed: {reason}"
        self.pending, self.pending_bytes = [], 0
        self.gate = FrameGate()
        self.flow.release_all(self)

    def head_overdue(self, began_before: float) -> bool:
        """The head being read began before `began_before` and is not complete yet, while we
        were reading (slowloris: worker.py closes it)."""
        reader = self.reader
        return (
            self.head_since < began_before
            and reader.in_head
            and reader.head_serial == self.head_serial
            and not self.blockers
            and not self.reading_held
            and self.may_read
        )

    def close(self, reason: str = "closed by relay") -> None:
        if self.transport is not None and not self.closed:
            self.close_reason = self.close_reason or reason
            self.flush()  # what was written this iteration (a last 400, say) goes first
            self.transport.close()

    def abort(self, reason: str = "worker exit") -> None:
        if self.transport is not None:
            self.close_reason = self.close_reason or reason
            self.transport.abort()

    @property
    def registry_key(self) -> str:
        return registry_key(self.peer_key, self.outbound)

    @property
    def idle(self) -> bool:
        """Nothing half-read, nothing waiting to be written, nothing received for QUIET
        seconds (more may be on its way): safe to close on stop."""
        buffered = self.pending_bytes + (
            self.transport.get_write_buffer_size() if self.transport else 0
        )
        # A connection paused by back-pressure may still have frames in its socket: not idle.
        quiet = self.stream_sink is None and not self.gate.held and self.gate.owner is None
        quiet = quiet and not self.blockers and self.arrival is None
        quiet = quiet and self.held_replies is None
        quiet = quiet and time.monotonic() - self.last_active > QUIET
        return self.reader.buffered == 0 and buffered == 0 and quiet
