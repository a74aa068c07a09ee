"""MsrpConnection: the asyncio side of one MSRP connection, around the sans-IO FrameReader.

Strategy (uvicorn's h11_impl, kept thin): data_received feeds the reader and hands each event
to a small handler. Only the owning worker writes to this transport (DESIGN §2).
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
from typing import TYPE_CHECKING, Final, cast

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
from ..routing.waits import Pending
from ..shm import Counter
from .connenv import ConnEnv
from .connstats import ConnStats
from .counting import count_frame_in
from .flow import FlowControl
from .intake import WAIT, Intake
from .migrate.hooks import MoveHooks
from .migrate.state import Arrival, MigrationState
from .outbox import Outbox
from .peers import registry_key
from .ports import WRITE_HIGH, Sink
from .routeenv import RouteRunner
from .stophooks import StopHooks
from .stopstate import StopState
from .transports.base import Wire

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["MsrpConnection"]

logger = logging.getLogger(__name__)

_monotonic: Final = time.monotonic
"""A static, compiled: a module global (`from time import monotonic`) is a dict lookup per call."""


class MsrpConnection(MoveHooks, StopHooks, asyncio.Protocol):
    """One connection over a wire (transports/), inbound (accepted) or outbound (opened to a
    next hop): reads through the FrameReader, writes through its Outbox; what it does to
    move to another worker is MoveHooks' (migrate/hooks.py), for a stop StopHooks'."""

    outbound = False
    """Opened by the relay to a next hop (delivery.py sets it), not accepted from a client."""

    listed = True
    """In the connection registry, so every worker reuses it; a retiring worker's links to
    next hops are not (retirelinks.py): the new generation opens its own."""

    def __init__(
        self,
        ctx: WorkerContext,
        routes: RouteRunner,
        wire: Wire,
        *,
        migration: MigrationState | None = None,
    ) -> None:
        # Annotated here, though the hooks declare them too: mypyc then keeps them in the
        # native layout (declared only in an uncompiled base, each read is a dict lookup).
        self.ctx: WorkerContext = ctx
        self.wire: Wire = wire
        self.migration = MigrationState() if migration is None else migration
        """Balancing and colocation (migrate/): an outbound link's never moves."""
        self.arrival: Arrival | None = None
        """Just moved here: what it holds back until its handover is done (migrate/)."""
        self.reader: FrameReader = FrameReader(routes.limits)
        self.conid = ctx.new_conid()
        self.info = ConnInfo("", wire.local_sock, self.conid)
        self.peer_key = ""
        self.stats: ConnStats = ConnStats()
        self.closed: bool = False
        self.out: Outbox = Outbox(
            self,
            wire,
            self.stats,
            FlowControl(),
            ctx.batch,
            ctx.counters.tally,
            self.continued,
        )
        self.stream_sink: Sink | None = None
        self.stream_tid = b""
        self.intake: Intake = Intake(wire, self.reader, ctx.batch, ctx.stop)
        self.env = ConnEnv(routes, self, self.out, self.intake)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        balancer = self.ctx.balancer
        if self.migration.balance and balancer is not None:
            listen = self.wire.local_sock
            if balancer.offer(cast(asyncio.Transport, transport), len(self.ctx.conns), listen):
                # Another worker owns it now: nothing is written here.
                self.migration.passed = self.closed = self.out.closed = True
                return
        if self.closed:  # given up by a stop while connecting (stopping.py)
            transport.abort()  # type: ignore[attr-defined]
            return
        wire = self.wire
        peer = wire.attach(transport, self.reader.receive_data, WRITE_HIGH, self.continued)
        self.peer_key = f"{wire.kind}:{peer}"
        node = self.env.routes.is_node(transport)  # a link from another node of the cluster
        self.info = ConnInfo(f"{wire.scheme}://{peer}", wire.local_sock, self.conid, node)
        self.ctx.connection_opened(self)
        if not self.env.routes.guard.admit(self):
            return  # over a limit ([limits]): closed before anything is read
        arrival = self.arrival
        if arrival is not None and arrival.on_taken_over is not None:
            arrival.on_taken_over(self)
            arrival.on_taken_over = None
        out = self.out
        if out.pending or out.close_when_flushed:
            out.flush()
        if arrival is not None and arrival.carried and not arrival.reading_held:
            carried, arrival.carried = arrival.carried, b""
            self.data_received(carried)

    def data_received(self, data: bytes) -> None:
        arrival = self.arrival
        if arrival is not None and arrival.reading_held:
            # uvloop starts reading after connection_made whatever it asked: keep the bytes
            # behind the carried ones and stop reading now.
            arrival.carried += data
            self.wire.pause_reading()
            return
        # Each attribute of the uncompiled WorkerContext is a dict lookup: the read's path
        # reads what it needs through compiled objects (the outbox's stats and tally are the
        # connection's and the worker's; the intake's wire, reader, write batch and stop).
        out, intake = self.out, self.intake
        stats = out.stats
        stats.last_active = now = _monotonic()
        stats.bytes_in += len(data)
        out.tally.bytes_in += len(data)
        rate = intake.rate
        if rate is not None:  # [limits] session rates (limits.py), charged here: compiled
            debt = rate.charge_read(len(data), now)
            if debt:
                self.env.routes.guard.throttle(self, rate, now, debt)
        wire = intake.wire
        if wire.direct:
            intake.reader.receive_data(data)  # what wire.receive is, called natively
        else:
            wire.receive(data)
        batch = intake.batch
        batch.begin()
        try:
            self._drain_events(intake, intake.stop)
        finally:
            batch.flush_now()
        reader = intake.reader
        if reader.in_head and reader.head_serial != intake.serial:
            intake.serial, intake.since = reader.head_serial, now  # a new head: head_timeout
        if self.migration.move_to is not None:
            mover = self.ctx.mover
            if mover is not None:
                mover.consider(self)

    def read_buffered(self) -> None:
        """Route the frames the reader holds already: a throttled read's rest (limits.py).
        Not while something else halts them (a frame waiting for a value: wait_for)."""
        if self.closed or self.intake.halted:
            return
        ctx = self.ctx
        batch = ctx.batch
        batch.begin()
        try:
            self._drain_events(self.intake, ctx.stop)
        finally:
            batch.flush_now()

    def eof_received(self) -> bool | None:
        arrival = self.arrival
        if arrival is not None and arrival.reading_held:
            arrival.eof_held = True
            return True  # keep the transport: what came before the EOF is read first
        self.wire.receive(b"")
        self._drain_events(self.intake, self.ctx.stop)
        # A frame waiting for a value is answered before the close: _waited reads the EOF.
        return True if self.intake.halted & WAIT else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.env.routes.guard.closed(self)
        if self.migration.passed:
            return
        self.closed = True
        self.stats.closing(f"error: {exc}" if exc else "closed by peer")
        self.out.shut()
        self.intake.held_replies = None  # a streamed chunk that never ended is not answered
        if self.stream_sink is not None:
            end = b"\r\n" + DASHES + self.stream_tid + b"#\r\n"
            self.stream_sink.send(end, source=self.conid)
            self.stream_sink = None
        self.ctx.connection_closed(self)
        transactions = self.env.routes.transactions
        if transactions is not None:  # after the cmap and registry forgot it: nothing new
            transactions.out_closed(self)  # goes out on it (rfc-checklist §4.5)

    def pause_writing(self) -> None:
        self.out.pause_writing()

    def resume_writing(self) -> None:
        self.out.resume_writing()

    # -- events -----------------------------------------------------------------------------

    def _drain_events(self, intake: Intake, stop: StopState) -> None:
        """Route what the reader has; `intake` and `stop` are the connection's and the
        worker's, passed by callers that hold them (each attribute of this class is a dict
        lookup)."""
        if intake.halted & WAIT:
            return  # what a read brings while a frame waits stays behind it in the reader
        reader = intake.reader
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
                if self.closed or intake.halted:
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
                self.out.write_frame(reply)
            self.close(f"protocol error: {exc}")

    def _on_frame(self, frame: Frame, again: bool = False) -> None:
        """Route `frame`; `again`: after its wait (_waited), counted and charged already."""
        env = self.env  # compiled: its outbox and intake (this connection's) read natively
        routes = cast(RouteRunner, env.routes)  # typed as itself: native calls
        if not again:
            out, intake = env.out, env.intake
            out.stats.frames_in += 1
            count_frame_in(out.tally, frame)
            rate = intake.rate
            if rate is not None:
                now = _monotonic()
                debt = rate.charge_frame(now)
                if debt:
                    routes.guard.throttle(self, rate, now, debt)
            if frame.streamed:
                intake.held_replies = []
        sink = routes.run(frame, self, env, self.info)
        if frame.streamed:
            self.stream_sink = sink
            self.stream_tid = frame.tid

    def wait_for(self, frame: Frame, pending: Pending) -> None:
        """The route of `frame` needs a value not here yet (waits.py): it waits (intake.py)."""
        intake = self.intake
        intake.waiting = frame
        intake.halted |= WAIT
        self.block(pending)
        pending.then(lambda: self._waited(pending))

    def _waited(self, pending: Pending) -> None:
        """The value has landed (or failed): route the frame again, then those behind it."""
        intake = self.intake
        frame, intake.waiting = intake.waiting, None
        intake.halted &= ~WAIT
        self.unblock(pending)
        if frame is None or self.closed:
            return  # closed meanwhile: nobody to answer
        ctx = self.ctx
        batch = ctx.batch
        batch.begin()
        try:
            self._on_frame(frame, again=True)  # the first pass was thrown away
            if not (self.closed or intake.halted):
                self._drain_events(intake, ctx.stop)
        finally:
            batch.flush_now()

    def _on_frame_end(self, end: FrameEnd) -> None:
        if self.stream_sink is not None:
            self.stream_sink.send(end.raw, source=self.conid)
            self.stream_sink = None
        # The chunk is in, whatever its flag: "#" ends it too (RFC 4975 §7.1).
        intake = self.intake
        held, intake.held_replies = intake.held_replies or [], None
        for data, close_after in held:
            self.out.write_frame(data, close_after)

    def continued(self, tid: bytes, written: int) -> bytes | None:
        """The id of the chunk that continues chunk `tid`, interrupted on its way out to this
        connection after `written` body bytes: a transaction like `tid`'s, or None when `tid`
        is none of the relay's (transports/base.ChunkIds)."""
        tx = self.env.routes.transactions
        if tx is None:
            return None
        return tx.continued((self.conid, *self.migration.former), tid, written)

    def write_reply(self, data: bytes, close_after: bool = False) -> None:
        """Answer the frame being routed: now, or once its end-line is in when it is streamed."""
        self.env.answer(data, close_after)

    def _on_invalid(self, invalid: InvalidFrame) -> None:
        self.ctx.counters.add(Counter.invalid_frames)
        logger.info("invalid frame %r from %s: %s", invalid.tid, self.peer_key, invalid.reason)
        if not invalid_gets_reply(invalid):
            return  # a response, a REPORT or Failure-Report: no: dropped (RFC 4975 §7.1.2)
        reply = build_invalid_reply(invalid, self.wire.self_uri())
        if reply is None:
            self.close(f"unanswerable invalid frame: {invalid.reason}")
        else:
            self.out.write_frame(reply, False)

    def _on_sip(self, message: SipMessage) -> None:
        self.env.routes.run_sip(SipRequest(message.raw, self.out.write_frame, f"{self.conid:x}"))

    def block(self, dest: Hashable) -> None:
        """`dest` (a connection or a handoff link) is congested by what we relay: stop
        reading until it drains (intake.py)."""
        self.intake.block(dest, not self.closed)

    def unblock(self, dest: Hashable) -> None:
        resume = not self.reading_held and not self.closed and self.may_read
        intake = self.intake
        intake.unblock(dest, resume)
        if self.migration.move_to is not None and resume and not intake.blockers:
            # A move waited for reading to resume: now, before the next read, the reader is
            # where its last read left it, a frame's end (colocate.py).
            mover = self.ctx.mover
            if mover is not None:
                self.ctx.loop.call_soon(mover.consider, self)

    def connect_failed(self, reason: str) -> None:
        """An outbound connect that never completed (asyncio calls no connection_lost): let
        go of what waits here and resume the sources it paused (issue 12)."""
        self.closed = True
        self.stats.closing(f"connect failed: {reason}")
        self.out.shut(drop=True)

    def head_overdue(self, began_before: float) -> bool:
        """The head being read began before `began_before` and is not complete yet, while we
        were reading (slowloris: housekeeping.py closes it)."""
        return self.intake.overdue(began_before) and not self.reading_held and self.may_read

    def close(self, reason: str = "closed by relay", going_away: bool = False) -> None:
        """`going_away`: the relay is stopping (the wire may say so, Wire.close)."""
        if self.wire.transport is not None and not self.closed:
            self.stats.closing(reason)
            self.out.flush()  # what was written this iteration (a last 400, say) goes first
            self.wire.close(going_away)

    def abort(self, reason: str = "worker exit") -> None:
        if self.wire.transport is not None:
            self.stats.closing(reason)
            self.wire.abort()

    @property
    def registry_key(self) -> str:
        return registry_key(self.peer_key, self.outbound)
