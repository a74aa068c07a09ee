"""TxRelay: the worker's transaction layer, what `msrp.t_relay()` does (rfc-checklist §2.1
steps 6-9, §2.4-§2.7, §4.4, §4.5).

Rules:
- A request is forwarded with its paths rotated and a new transaction id (RFC 4976 §6.4;
  protocol/transact.py), the end-line of a streamed one rewritten as it passes (StreamSink).
  A SEND whose sender wants failure reports, an AUTH and an unknown method get a transaction
  (transactions.py); a REPORT and a SEND with Failure-Report no are sent and forgotten: nobody
  answers them, and their loss is reported to nobody (RFC 4975 §7.1.2, §7.1.4).
- A response is matched to its transaction by the worker that owns it, named in the id. Read
  by another worker (the next hop's connection lives there), it is handed to the owner as a
  RESPONSE over the handoff link, with the ids the arrival connection has had (handoff.py).
  An id of another shape, an unknown one, one that went out on another connection, or a
  To-Path not headed by our URI: dropped and counted (tx_unmatched, §2.7 steps 2-3).
- Matched: the response to a SEND ends there (RFC 4976 §6.4.3); not 2xx, its sender gets a
  REPORT with that code when it asked for failure reports. Any other response is mapped back
  (original id, our URI moved from To-Path to From-Path, §2.7) onto the connection the
  request came on; if that is gone the response is dropped (responses_dropped).
- No answer within `[msrp] transaction_timeout` (one sweep every SWEEP seconds, armed only
  while transactions are live): a SEND with Failure-Report yes gets a REPORT 000 408, an
  AUTH a 408 response (§2.6), anything else is forgotten; a later response is unmatched.
- A next hop that cannot be reached (no connection and none may be opened, a connect that
  fails or is refused by the dialing bounds, dialing.py): the sender hears what it would on
  a timeout, at once (REPORT 408 also for Failure-Report partial, policy §8.2), and the
  transaction ends. Its connection known but gone: 481, as for relay().
- The connection a request went out on closes before the answer (§4.5): its transactions
  fail at once, as above (408 for a next hop we connected to, 481 for a client's session).
  Its worker tells the others with a CLOSED (its ids, former ones included: a connection
  that moved is no close); no timer, no shared-memory poll.
- A next hop that answers 413 refuses the whole message (RFC 4975 §10.5, rfc-checklist §2.8,
  case 30d): a chunk of it still being forwarded is cut at once with "#" (no later chunks
  follow), the sender gets its REPORT 413 (Failure-Report permitting), and for REFUSED_TTL
  seconds its later chunks are not forwarded: t_reply answers them 413 instead of 2xx
  (message_refused), and t_relay drops them (counted in tx_refused). A chunk its sender
  ends with "#" is forwarded so, and refuses the message's later chunks the same way (RFC
  4975 §7.1: the message is aborted; rfc-checklist case 29).
- A chunk cut on its way out (WebSocket re-chunking, a frame waiting behind it) goes on as
  a transaction like the cut one's (txchunks.py).
- Per frame: one dict insert and one deque append per forwarded SEND, one dict pop per
  response; no timer per transaction.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING

from ..protocol import (
    NEED_DATA,
    Frame,
    FrameReader,
    LocalProtocolError,
    RemoteProtocolError,
)
from ..protocol.frame import AUTH, SEND
from ..protocol.transact import end_line_in_body, response_facts, tid_owner
from ..routing.env import Destination
from ..shm import Counter
from .connenv import Resolver, RoutedConn
from .gone import GoneReports
from .handoff import Handoff, HandoffKind
from .liveworkers import LiveWorkers
from .migrate.handoverio import MovedSink
from .ports import Sink
from .reports import tx_notice
from .sinks import HandoffSink, LocalSink
from .transactions import TidSource, Transaction, TransactionTable, transaction_for
from .txbuild import mapped_back, outgoing
from .txchunks import Continuations
from .txstream import StreamSink

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["SWEEP", "TxRelay"]

logger = logging.getLogger("msrpd.route")

SWEEP = 0.25
"""Seconds between two sweeps of the deadlines: a REPORT 408 is at most this late."""
REFUSED_TTL = 300.0
"""Seconds the later chunks of a message refused with 413 are refused here too."""
REFUSED_MEMORY = 4096
"""Refused messages remembered per worker at most (the oldest is forgotten first)."""
_TIMEOUT = (408, "Request Timeout")
_GONE = (481, "Session Does Not Exist")


class TxRelay:
    """One worker's transactions; `ctx` is read when frames come (built with the context)."""

    __slots__ = (
        "chunks",
        "ctx",
        "ids",
        "me",
        "reader",
        "refused",
        "reports",
        "sweeping",
        "table",
        "workers",
    )

    def __init__(self, ctx: WorkerContext, reports: GoneReports) -> None:
        self.ctx = ctx
        self.me = (ctx.ident.slot, ctx.ident.generation)
        self.ids = TidSource(*self.me)
        self.table = TransactionTable(ctx.settings.msrp.transaction_timeout)
        self.reports = reports
        """Writes to an origin that colocation moved to another worker since (gone.py)."""
        self.sweeping: object = None
        """The sweep's timer handle while one is scheduled."""
        self.refused: OrderedDict[tuple[int, bytes], float] = OrderedDict()
        """(origin connection id, Message-ID) -> until when (monotonic) a next hop's 413
        refuses that message's later chunks."""
        self.workers = LiveWorkers(ctx.shm.heartbeats)
        self.chunks = Continuations(ctx, self.table, self.workers, self.restart)
        """Chunks cut on their way out, continued as transactions (txchunks.py)."""
        self.reader = FrameReader()
        """Reads the responses other workers hand us (_read)."""

    def new_tid(self, frame: Frame) -> bytes:
        """A transaction id of ours for forwarding `frame`: not live, not in its body."""
        live = self.table.live
        while True:
            tid = self.ids.draw()
            if tid not in live and not end_line_in_body(frame, tid):
                return tid

    # -- requests ---------------------------------------------------------------------------

    def forward(
        self,
        origin: RoutedConn,
        frame: Frame,
        basis: Frame,
        dest: Destination,
        flags: int,
        delivery: Resolver | None,
    ) -> Sink | bool:
        """Forward request `frame` from `origin` towards `dest`: its sink, or when it cannot
        go (counted) True if its sender has been told what the module docstring says (or
        is owed nothing), False if nobody was told. `basis` is the request as its sender
        sent it (the frame itself, or the outer frame of a pass through our own URI,
        loopback.py): what a REPORT or response goes back along."""
        counters = self.ctx.counters
        if self.refused and self.message_refused(origin, basis):
            counters.add(Counter.tx_refused)
            return True  # t_reply answered it 413
        try:
            tid = self.new_tid(frame)
            data, hop_uri = outgoing(frame, dest, tid)
        except LocalProtocolError:  # To-Path holds our URI only: nowhere to forward
            return False
        node = frame.first_to if dest.node else b""
        tx = transaction_for(basis, hop_uri, tid, origin, node=node)
        if tx is not None and self.table.full(origin):
            counters.add(Counter.tx_refused)
            logger.info("%x: %d transactions live: refused", origin.conid, self.table.max_per_conn)
            self.lost(tx, *_TIMEOUT)
            return True
        lost = None if tx is None else partial(self.lost, tx)
        sink = None if delivery is None else delivery.resolve(dest, flags, basis, origin, lost)
        if sink is None:
            counters.add(Counter.relay_fail)
            if tx is not None:
                self.lost(tx, *(_TIMEOUT if dest.conid is None else _GONE))
            return tx is not None
        if tx is not None and tx.ended:  # refused by the dialing bounds: told already
            return True
        streamed = frame.end_start < 0  # frame.streamed
        if not sink.send(data, source=origin.conid, more=streamed):
            counters.add(Counter.relay_fail)
            if tx is not None:
                self.lost(tx, *_GONE)
            return tx is not None
        counters.tally.frames_out += 1
        if frame.flag == b"#" and frame.method == SEND:  # its sender aborted the message
            self.refuse_message(origin.conid, basis.message_id)
        if tx is not None:
            # The connection it went out on, by exact type (isinstance is slow on a class
            # that implements a Protocol); inline: once per forwarded request.
            if type(sink) is LocalSink or type(sink) is HandoffSink:
                tx.out = sink.conid
            elif type(sink) is MovedSink:
                tx.out = sink.departure.old
            if not streamed and frame.body_start >= 0:  # Frame.body's length, not the view
                tx.received = max(0, frame.end_start - 2 - frame.body_start)
            self.table.add(tx, time.monotonic(), whole=not streamed)
            if self.sweeping is None:
                self.arm()
        if not streamed:
            return sink
        message_id = basis.message_id if frame.method == SEND else None
        stream = StreamSink(sink, tid, tx, self, origin.conid, message_id)
        if tx is not None:
            tx.stream = stream
        return stream

    def message_refused(self, origin: RoutedConn, frame: Frame) -> bool:
        """`frame` (a SEND from `origin`) belongs to a message a next hop refused with 413,
        or that its sender aborted (a chunk ending with "#", RFC 4975 §7.1)."""
        if not self.refused or frame.method != SEND or frame.message_id is None:
            return False
        until = self.refused.get((origin.conid, frame.message_id))
        return until is not None and time.monotonic() < until

    def lost(self, tx: Transaction, code: int, reason: str) -> None:
        """`tx`'s request will get no answer: it ends, and its sender hears `code`."""
        if tx.ended:
            return
        self.table.end(tx)
        self._tell(tx, code, reason)

    def _tell(self, tx: Transaction, code: int, reason: str) -> None:
        notice = tx_notice(tx, code, reason)
        if notice is not None:
            self._to_origin(tx, notice)

    def _to_origin(self, tx: Transaction, data: bytes) -> bool:
        """Write `data` to `tx`'s origin connection, here or where colocation moved it."""
        origin = tx.origin
        if not origin.closed:
            origin.write_reply(data)
            return True
        return origin.migration.passed and self.reports.report_to(origin.conid, data)

    def continued(self, arrival: tuple[int, ...], tid: bytes, written: int) -> bytes | None:
        """The id of the chunk that continues chunk `tid`, cut on connection `arrival`
        after `written` body bytes (txchunks.Continuations.continued)."""
        return self.chunks.continued(arrival, tid, written)

    # -- responses --------------------------------------------------------------------------

    def response(self, conn: RoutedConn, frame: Frame) -> int:
        """Response `frame` came on `conn`: 1 when it is matched here or handed to the
        worker that owns its transaction, -1 when dropped."""
        tid = frame.tid
        if tid.startswith(self.ids.prefix):
            tx = self.table.live.get(tid)  # TransactionTable.match, inline: every response
            if tx is not None and tx.out != conn.conid and tx.out not in conn.migration.former:
                tx = None
            reason = frame.reason or b""
            return self._answer(tx, tid, frame.code or 0, reason, frame.first_to, frame)
        owner = tid_owner(tid)
        hub = self.ctx.hub
        # Handed only to a live worker: a peer choosing ids must not make us dial handoff
        # paths of workers that do not exist.
        if owner is None or hub is None or owner not in self.workers:
            return self._unmatched(frame.tid)
        arrival = (conn.conid, *conn.migration.former)
        ids = struct.pack(f"!{len(arrival)}Q", *arrival)
        path = self.ctx.handoffs.path(*owner)
        hub.send_control(path, HandoffKind.RESPONSE, conn.conid, len(arrival), ids + frame.buf)
        return 1

    def handed(self, msg: Handoff) -> None:
        """A RESPONSE another worker read for one of our transactions: matched on the facts
        of its first lines; parsed whole only when it is to be mapped back (not a SEND's)."""
        size, payload = 8 * msg.token, msg.payload
        data = payload[size:]
        facts = response_facts(data) if 0 < size <= len(payload) else None
        if facts is None:
            self.ctx.counters.add(Counter.tx_unmatched)
            return
        arrival = struct.unpack_from(f"!{msg.token}Q", payload)
        self._answer(self.table.match(facts[0], arrival), *facts, data)

    def _read(self, data: bytes) -> Frame | None:
        """`data`, one whole response another worker read, as a Frame. One reader serves
        every handed response (a new FrameReader costs more than the parse); a payload that
        is not exactly one frame gets it replaced."""
        reader = self.reader
        reader.receive_data(data)
        try:
            event = reader.next_event()
        except RemoteProtocolError:
            event = None
        if not isinstance(event, Frame) or reader.next_event() is not NEED_DATA:
            self.reader = FrameReader()
            return None
        return event

    def _answer(
        self,
        tx: Transaction | None,
        tid: bytes,
        code: int,
        reason: bytes,
        first_to: bytes,
        response: Frame | bytes,
    ) -> int:
        """Response `tid` to `tx` (TransactionTable.match; None: it matched none)."""
        if tx is None or first_to != tx.hop_uri:
            return self._unmatched(tid)
        self.table.end(tx)
        if tx.method == SEND:
            if code == 413:
                self._refuse(tx)
            if not 200 <= code < 300:  # any 2xx is success (RFC 4976 §6.4.1 "200-class")
                self._tell(tx, code, reason.decode("utf-8", "replace") or "Failed")
            return 1
        frame = response if isinstance(response, Frame) else self._read(response)
        data = None if frame is None else mapped_back(frame, tx)
        if data is None:  # To-Path holds our URIs only: no one to map it back to
            return self._unmatched(tid)
        if not self._to_origin(tx, data):
            self.ctx.counters.add(Counter.responses_dropped)
            return -1
        return 1

    def _refuse(self, tx: Transaction) -> None:
        stream, tx.stream = tx.stream, None
        if stream is not None:
            current = stream.interrupt()
            if current is not None and current is not tx:
                # The chunk cut with "#" continues `tx`'s (split): the message is refused
                # and its sender hears it once, from this REPORT 413.
                self.table.end(current)
        self.refuse_message(tx.origin.conid, tx.message_id)

    def refuse_message(self, conid: int, message_id: bytes | None) -> None:
        """The later chunks of message `message_id` from connection `conid` are refused for
        REFUSED_TTL seconds: t_reply answers them 413, t_relay drops them."""
        if message_id is None:
            return
        key = (conid, message_id)
        self.refused[key] = time.monotonic() + REFUSED_TTL
        self.refused.move_to_end(key)
        while len(self.refused) > REFUSED_MEMORY:
            self.refused.popitem(last=False)

    def _unmatched(self, tid: bytes) -> int:
        self.ctx.counters.add(Counter.tx_unmatched)
        logger.debug("response %r matches no transaction: dropped", tid)
        return -1

    # -- next hops that close (rfc-checklist §4.5) --------------------------------------------

    def out_closed(self, conn: RoutedConn) -> None:
        """`conn` closed here (it did not move): nothing that went out on it will be answered.
        Its transactions here fail now; every other worker is told (CLOSED) when one may
        have some: it was handed frames, or it moved here (its former ids)."""
        former = conn.migration.former
        self._hop_closed((conn.conid, *former), conn.outbound)
        hub = self.ctx.hub
        if hub is None or not (conn.stats.handed or former):
            return
        if hub.closed or self.ctx.stop.stopping:
            return  # no new link: a stop ends when every link is gone (stopping.py)
        ids = struct.pack(f"!{len(former)}Q", *former)
        outbound = int(conn.outbound)
        for worker in self.workers.current() - {self.me}:
            self.ctx.handoffs.control(worker, HandoffKind.CLOSED, conn.conid, outbound, ids)

    def closed_elsewhere(self, msg: Handoff) -> None:
        """Another worker's connection `msg.conid` (and its former ids) closed (CLOSED)."""
        former = struct.unpack_from(f"!{len(msg.payload) // 8}Q", msg.payload)
        self._hop_closed((msg.conid, *former), msg.token == 1)

    def _hop_closed(self, ids: tuple[int, ...], outbound: bool) -> None:
        """The transactions whose request went out on connection `ids` fail: a next hop the
        relay connected to could not be reached (408, policy §8.2), a client's session is
        gone (481)."""
        failed = self.table.gone(ids)
        if not failed:
            return
        self.ctx.counters.add(Counter.tx_hop_closed, len(failed))
        logger.info("%x closed: %d forwarded transactions failed", ids[0], len(failed))
        code, reason = _TIMEOUT if outbound else _GONE
        for tx in failed:
            self._tell(tx, code, reason)

    # -- deadlines --------------------------------------------------------------------------

    def restart(self, tx: Transaction) -> None:
        self.table.restart(tx, time.monotonic())
        self.arm()

    def arm(self) -> None:
        if self.sweeping is None:
            self.sweeping = self.ctx.loop.call_later(SWEEP, self.sweep)

    def sweep(self) -> None:
        """End the transactions whose deadline passed, telling their senders."""
        self.sweeping = None
        for tx in self.table.expired(time.monotonic()):
            self.ctx.counters.add(Counter.tx_timeouts)
            if tx.method == AUTH or (tx.method == SEND and tx.failure_report == b"yes"):
                self._tell(tx, *_TIMEOUT)
        if len(self.table):
            self.arm()
