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
- A next hop that answers 413 refuses the whole message (RFC 4975 §10.5, rfc-checklist §2.8,
  case 30d): a chunk of it still being forwarded is cut at once with "#" (no later chunks
  follow), the sender gets its REPORT 413 (Failure-Report permitting), and for REFUSED_TTL
  seconds its later chunks are not forwarded: t_reply answers them 413 instead of 2xx
  (message_refused), and t_relay drops them (counted in tx_refused). A chunk its sender
  ends with "#" is forwarded so, and refuses the message's later chunks the same way (RFC
  4975 §7.1: the message is aborted; rfc-checklist case 29).
- A chunk cut on its way out by the worker writing it (WebSocket re-chunking, a frame
  waiting behind it) goes on under a new id named after the cut chunk's owner, which makes
  it a transaction like the cut one (txbuild.continued_tx; a CHUNK handoff when the writer
  is another worker, sent before the chunk can be answered, on the link its answer takes).
- Per frame: one dict insert and one deque append per forwarded SEND, one dict pop per
  response; no timer per transaction.
"""

from __future__ import annotations

import logging
import os
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
    relay_splice,
)
from ..protocol.frame import AUTH, SEND
from ..protocol.transact import (
    RANDOM_HEX,
    TID_LENGTH,
    end_line_in_body,
    make_tid,
    response_facts,
    tid_owner,
)
from ..routing.env import Destination
from ..shm import Counter
from .connenv import Resolver, RoutedConn
from .gone import GoneReports
from .handoff import Handoff, HandoffKind
from .migrate.handoverio import MovedSink
from .ports import Sink
from .reports import tx_notice
from .sinks import HandoffSink, LocalSink
from .transactions import TidSource, Transaction, TransactionTable
from .txbuild import continued_tx, mapped_back, new_transaction
from .txowners import Owners
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


def _target(sink: Sink) -> int:
    """The id of the connection `sink` writes to (-1: none)."""
    if isinstance(sink, (LocalSink, HandoffSink)):
        return sink.conid
    if isinstance(sink, MovedSink):
        return sink.departure.old
    return -1


class TxRelay:
    """One worker's transactions; `ctx` is read when frames come (built with the context)."""

    __slots__ = (
        "ctx",
        "ids",
        "me",
        "owners",
        "reader",
        "refused",
        "reports",
        "sweeping",
        "table",
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
        self.owners = Owners(ctx)
        """Hands what another worker's transaction needs to that worker (txowners.py)."""
        self.reader = FrameReader()
        """Reads the responses other workers hand us (_read)."""

    def new_tid(self, frame: Frame) -> bytes:
        """A transaction id of ours for forwarding `frame`: not live, not in its body."""
        while True:
            tid = self.ids()
            if tid not in self.table and not end_line_in_body(frame, tid):
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
            data = relay_splice(frame, tid)
        except LocalProtocolError:  # To-Path holds our URI only: nowhere to forward
            return False
        tx = new_transaction(basis, frame.first_to, tid, origin)
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
        streamed = frame.streamed
        if not sink.send(data, source=origin.conid, more=streamed):
            counters.add(Counter.relay_fail)
            if tx is not None:
                self.lost(tx, *_GONE)
            return tx is not None
        counters.add(Counter.frames_out)
        if frame.flag == b"#" and frame.method == SEND:  # its sender aborted the message
            self.refuse_message(origin.conid, basis.message_id)
        if tx is not None:
            tx.out = _target(sink)
            body = frame.body
            tx.received = 0 if body is None else len(body)
            self.table.add(tx, time.monotonic(), whole=not streamed)
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

    # -- responses --------------------------------------------------------------------------

    def response(self, conn: RoutedConn, frame: Frame) -> int:
        """Response `frame` came on `conn`: 1 when it is matched here or handed to the
        worker that owns its transaction, -1 when dropped."""
        arrival = (conn.conid, *conn.migration.former)
        if frame.tid.startswith(self.ids.prefix):
            return self.answer(arrival, frame)
        owner = tid_owner(frame.tid)
        if owner is None or not self.owners.send(owner, HandoffKind.RESPONSE, arrival, frame.buf):
            return self._unmatched(frame.tid)
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
        self._answer(arrival, *facts, data)

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

    def answer(self, arrival: tuple[int, ...], frame: Frame) -> int:
        """Response `frame`, read on a connection that has had the ids `arrival`."""
        reason = frame.reason or b""
        return self._answer(arrival, frame.tid, frame.code or 0, reason, frame.first_to, frame)

    def _answer(
        self,
        arrival: tuple[int, ...],
        tid: bytes,
        code: int,
        reason: bytes,
        first_to: bytes,
        response: Frame | bytes,
    ) -> int:
        tx = self.table.match(tid, arrival)
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

    # -- chunks cut on their way out (transports/wsout.py, gate.py) --------------------------

    def continued(self, arrival: tuple[int, ...], tid: bytes, written: int) -> bytes | None:
        """The id of the chunk that continues chunk `tid`, interrupted on connection
        `arrival` (its current and former ids) after `written` body bytes: named after
        `tid`'s owner, whose transaction it becomes (told over the handoff link when that is
        another worker: the chunk's answer, handed the same way, comes after). None when
        `tid` names no live worker of ours: no transaction of ours to continue."""
        owner = tid_owner(tid)
        if owner is None:
            return None
        new = make_tid(tid[:6], os.urandom(RANDOM_HEX // 2).hex())
        if owner == self.me:
            self.split(arrival, tid, new, written)
            return new
        data = struct.pack("!Q", written) + tid + new
        return new if self.owners.send(owner, HandoffKind.CHUNK, arrival, data) else None

    def handed_chunk(self, msg: Handoff) -> None:
        """A CHUNK another worker sent (continued) for one of our transactions."""
        size, payload = 8 * msg.token, msg.payload
        if msg.token < 1 or len(payload) != size + 8 + 2 * TID_LENGTH:
            return
        *arrival, written = struct.unpack_from(f"!{msg.token}QQ", payload)
        at = size + 8
        tid, new = bytes(payload[at : at + TID_LENGTH]), bytes(payload[at + TID_LENGTH :])
        self.split(tuple(arrival), tid, new, written)

    def split(self, arrival: tuple[int, ...], tid: bytes, new: bytes, written: int) -> None:
        """Chunk `tid` (out on `arrival`) ended after `written` body bytes and goes on as
        `new`: a transaction like it, with the rest of its stream if that is still being
        forwarded; `tid`'s timer starts (its last byte is out, RFC 4976 §6.4.1). Nothing
        when `tid` is no live transaction here (answered, or cut by a 413 already): an
        answer to `new` is then unmatched."""
        tx = self.table.match(tid, arrival)
        if tx is None or new in self.table:
            return
        cont = continued_tx(tx, new, written)
        stream = tx.stream
        self.restart(tx)  # before `cont`'s: their deadlines come up in the chunks' order
        self.table.add(cont, time.monotonic(), whole=stream is None)
        if stream is not None:
            stream.tx, cont.stream = cont, stream  # tx.stream stays: a 413 to it cuts too

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
