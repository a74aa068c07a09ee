"""The transaction table: what one worker forwarded statefully and still waits an answer for
(rfc-checklist §2.1 step 7, §2.7, §4.4).

Rules:
- One table per worker. The worker that read a request owns its transaction; the new
  transaction id names that worker (protocol/transact.py), so a response read by another
  worker (the next hop's connection is served there) is handed to the owner over the handoff
  link as a RESPONSE (handoff.py; txrelay.py sends and receives it).
- A transaction is matched on (the connection the request went out on, new transaction id):
  a response on any other connection does not touch it. The table is indexed by the new id
  alone (we draw it, 80 random bits, and never reuse a live one); `match` then checks the
  connection. A connection that moved to another worker since (colocation) is known by its
  current id and its former ones (MigrationState.former), so its answer still matches.
- The connection a request came on (its origin) may move to another worker by colocation
  while it has live transactions: they stay here, and what they owe it (REPORTs, mapped
  responses) follows it there as GONE reports do (txrelay.py, gone.py). A reload's handover
  waits for them (MigrationState.tx_open, colocate.ready_to_move): the retiring worker that
  owns them may exit before they end.
- Deadlines: one timeout for every transaction (`[msrp] transaction_timeout`), so a deque in
  deadline order and one periodic sweep replace per-transaction timers. An entry whose
  transaction ended or got a later deadline (a streamed chunk's end-line restarts it: the
  timer runs from the last byte written, RFC 4976 §6.4.1) is skipped when it comes up.
- Indexed by the connection each request went out on too (`by_out`, one dict insert and
  one delete per transaction), so that when that connection closes its transactions fail at
  once (`gone`, rfc-checklist §4.5) instead of at their deadline. A connection that moved
  is no close: it keeps its old ids (MigrationState.former), and its close names them all.
- Bounded: an origin connection with MAX_PER_CONN live transactions is not read until half
  of them have ended (back-pressure: a sender faster than its next hop's answers is slowed,
  nothing is refused); the frames of the read in progress still go, and at HARD_LIMIT times
  that the caller refuses a request (txrelay.py: the sender hears what it would for an
  unreachable next hop).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Final, Protocol

from ..protocol import Frame
from ..protocol.frame import REPORT, SEND
from ..protocol.transact import RANDOM_HEX, header_in, tid_prefix
from .migrate.state import MigrationState

__all__ = [
    "COMPACT_SLACK",
    "MAX_PER_CONN",
    "Interruptible",
    "Origin",
    "TidSource",
    "Transaction",
    "TransactionTable",
    "transaction_for",
]

MAX_PER_CONN = 1024
HARD_LIMIT = 2
"""Times MAX_PER_CONN past which a request is refused (the reads of a paused origin that
were in progress when it was paused)."""
"""Live transactions the requests of one connection may have (rfc-checklist §5.5)."""
COMPACT_SLACK = 1024
"""Deadline entries beyond twice the live transactions before the ended ones are dropped."""


class TidSource:
    """New transaction ids for one worker: its prefix (protocol/transact.py), then 80 bits
    from the CSPRNG. os.urandom is read POOL ids at a time: one getrandom call per id cost
    more than the rest of making it."""

    POOL: Final = 256

    __slots__ = ("_at", "_pool", "prefix")

    def __init__(self, slot: int, generation: int) -> None:
        self.prefix = tid_prefix(slot, generation)
        self._pool = b""
        self._at = 0

    def draw(self) -> bytes:
        """The next id. A method, not __call__: compiled, a call of the instance is generic."""
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(RANDOM_HEX // 2 * self.POOL).hex().encode(), 0
        self._at = at + RANDOM_HEX
        return self.prefix + self._pool[at : at + RANDOM_HEX]  # protocol.transact.make_tid


class Interruptible(Protocol):
    """A streamed request still being forwarded (txstream.StreamSink)."""

    tx: Transaction | None
    """The transaction of the chunk it is forwarding (another after a split, txrelay.py)."""

    def interrupt(self) -> Transaction | None:
        """End the chunk with "#"; the transaction of the chunk cut, None if it had ended."""


class Origin(Protocol):
    """The connection a forwarded request came on (conn.MsrpConnection)."""

    conid: int
    closed: bool
    migration: MigrationState

    def write_reply(self, data: bytes, close_after: bool = False) -> None: ...

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...


class Transaction:
    """One forwarded request, kept small: the request itself may be megabytes and gone. A
    plain class, not a dataclass: compiled, a dataclass is built by an interpreted __init__
    (4,500 instructions per forwarded request, callgrind)."""

    __slots__ = (
        "deadline",
        "ended",
        "failure_report",
        "from_span",
        "head",
        "hop_uri",
        "method",
        "node",
        "orig_tid",
        "origin",
        "out",
        "received",
        "stream",
        "tid",
        "to_span",
    )

    def __init__(
        self,
        tid: bytes,
        origin: Origin,
        orig_tid: bytes,
        method: bytes,
        failure_report: bytes,
        head: bytes,
        to_span: tuple[int, int, int],
        from_span: tuple[int, int, int],
        hop_uri: bytes,
    ) -> None:
        self.tid = tid
        """The new transaction id the next hop saw."""
        self.origin = origin
        self.orig_tid = orig_tid
        self.method = method
        self.failure_report = failure_report
        """b"yes", b"partial" or b"no", as received (absent: b"yes", RFC 4975 §7.1.4)."""
        self.head = head
        """The request's first line and header lines as received: Message-ID and Byte-Range
        are read from it when a REPORT needs them (rare), not on every SEND."""
        self.to_span = to_span
        self.from_span = from_span
        """The request's To-Path and From-Path spans (Frame.to_span), in `head`: the values
        are sliced from it only when a REPORT or a mapped response needs them."""
        self.hop_uri = hop_uri
        """Our URI that went to the front of the forwarded From-Path: a response's To-Path
        starts with it. Another of ours than `our_uri` after a pass through our own URI; the
        sender's first From-Path URI when sent to another node (`node`)."""
        self.out = -1
        """The connection the request went out on (its id when it was sent)."""
        self.received = 0
        """Body bytes received: the range-end a REPORT gives (RFC 4975 §7.1.2)."""
        self.deadline = 0.0
        self.stream: Interruptible | None = None
        """Its streamed chunk while the body is still being forwarded."""
        self.ended = False
        """Answered, timed out or lost: nothing more happens to it."""
        self.node = b""
        """Sent to another node of the cluster with its paths kept (routing/hop.py): the URI
        of ours that node's took the place of, which its response's From-Path gets back
        (txbuild.mapped_back); empty when not."""

    @property
    def from_path(self) -> bytes:
        """The From-Path value as received: a REPORT's To-Path, an AUTH response's To-Path."""
        return self.head[self.from_span[0] : self.from_span[2]]

    @property
    def our_uri(self) -> bytes:
        """The leftmost To-Path URI as received (our token): a REPORT's From-Path."""
        return self.head[self.to_span[0] : self.to_span[1]]

    @property
    def message_id(self) -> bytes | None:
        return header_in(self.head, b"message-id:")

    @property
    def byte_range(self) -> bytes | None:
        return header_in(self.head, b"byte-range:")


class TransactionTable:
    def __init__(self, timeout: float, max_per_conn: int = MAX_PER_CONN) -> None:
        self.timeout = timeout
        self.max_per_conn = max_per_conn
        self.hard_limit = HARD_LIMIT * max_per_conn
        """Live transactions of one origin past which a request is refused (`full`)."""
        self.paused: set[Origin] = set()
        """Origins not read because they have max_per_conn live transactions."""
        self.live: dict[bytes, Transaction] = {}
        self.by_out: dict[int, dict[bytes, Transaction]] = {}
        """The live transactions by the connection their request went out on (`out`)."""
        self._deadlines: deque[tuple[float, Transaction]] = deque()
        """(deadline, transaction), in deadline order; an entry of one that ended stays
        until it comes up, or until compaction (`restart`) drops it."""

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, tid: bytes) -> bool:
        return tid in self.live

    def full(self, origin: Origin) -> bool:
        """`origin` has as many live transactions as it may, even paused."""
        return origin.migration.tx_open >= self.hard_limit

    def add(self, tx: Transaction, now: float, *, whole: bool = True) -> None:
        """Record `tx` (its request has been written to connection `tx.out`). A streamed
        chunk (`whole` false) has no deadline until its end-line is written (restart)."""
        self.live[tx.tid] = tx
        if tx.out >= 0:
            same = self.by_out.get(tx.out)
            if same is None:
                self.by_out[tx.out] = {tx.tid: tx}
            else:
                same[tx.tid] = tx
        origin = tx.origin
        migration = origin.migration  # one lookup: Origin is a protocol
        migration.tx_open += 1
        if migration.tx_open >= self.max_per_conn and origin not in self.paused:
            self.paused.add(origin)
            origin.block(self)
        if whole:
            self.restart(tx, now)
        else:
            tx.deadline = math.inf

    def restart(self, tx: Transaction, now: float) -> None:
        """The last byte of `tx`'s request went out now: its timer starts again."""
        tx.deadline = deadline = now + self.timeout
        deadlines = self._deadlines
        # Most answers come in milliseconds and in order: the oldest entries have mostly
        # ended by now. Dropping them here keeps the deque short without a scan (_due,
        # inline: this runs for every forwarded request).
        while deadlines:
            first_deadline, first = deadlines[0]
            if not first.ended and first.deadline == first_deadline:
                break
            deadlines.popleft()
        deadlines.append((deadline, tx))
        if len(deadlines) > 2 * len(self.live) + COMPACT_SLACK:
            # Answers out of order (a slow next hop behind fast ones) leave ended entries
            # behind a live one: without this, every transaction of the last `timeout`
            # seconds would stay in memory. Filtering keeps the order.
            self._deadlines = deque([e for e in deadlines if _due(e)])

    def match(self, tid: bytes, arrival: tuple[int, ...]) -> Transaction | None:
        """The live transaction `tid` whose request went out on one of `arrival` (a
        connection's current and former ids), or None; it stays live (`end` ends it)."""
        tx = self.live.get(tid)
        if tx is None or tx.out not in arrival:
            return None
        return tx

    def end(self, tx: Transaction) -> None:
        """`tx` is over (answered, or its request lost): it leaves the table."""
        if tx.ended:
            return
        tx.ended = True
        if self.live.get(tx.tid) is tx:
            del self.live[tx.tid]
            same = self.by_out.get(tx.out)
            if same is not None:
                del same[tx.tid]
                if not same:
                    del self.by_out[tx.out]
            origin = tx.origin
            migration = origin.migration
            migration.tx_open -= 1
            if migration.tx_open <= self.max_per_conn // 2 and origin in self.paused:
                self.paused.discard(origin)
                origin.unblock(self)

    def gone(self, outs: Iterable[int]) -> list[Transaction]:
        """The live transactions whose request went out on one of `outs` (the ids of a
        connection that closed), ended."""
        found: list[Transaction] = []
        for conid in outs:
            same = self.by_out.get(conid)
            if same is not None:
                found.extend(same.values())
        for tx in found:
            self.end(tx)
        return found

    def expired(self, now: float) -> list[Transaction]:
        """The transactions whose deadline has passed, ended (in deadline order)."""
        deadlines, out = self._deadlines, []
        while deadlines and deadlines[0][0] <= now:
            deadline, tx = deadlines.popleft()
            if _due((deadline, tx)):
                self.end(tx)
                out.append(tx)
        return out


def _due(entry: tuple[float, Transaction]) -> bool:
    """The entry is its transaction's current deadline (not ended, not restarted since)."""
    deadline, tx = entry
    return not tx.ended and tx.deadline == deadline


def transaction_for(
    basis: Frame, hop_uri: bytes, tid: bytes, origin: Origin, *, node: bytes = b""
) -> Transaction | None:
    """The transaction for forwarding `basis` under `tid` (to another node of the cluster,
    in place of our URI `node`), or None when nothing can come of it: a REPORT, a SEND with
    Failure-Report no."""
    method = basis.method
    if method is None or method == REPORT:
        return None
    wanted = basis.failure_report
    if method == SEND and wanted == b"no":
        return None
    tx = Transaction(
        tid,
        origin,
        basis.tid,
        method,
        wanted,
        basis.buf[: basis.hdr_end],
        basis.to_span,
        basis.from_span,
        hop_uri,
    )
    tx.node = node
    return tx
