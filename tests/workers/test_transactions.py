"""The transaction table (workers/transactions.py): matching on (connection, id), deadlines
in one ordered deque, the per-connection bound, the origin pinned while it has live ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from msrpd.protocol.transact import tid_owner
from msrpd.workers.migrate.state import MigrationState
from msrpd.workers.transactions import COMPACT_SLACK, TidSource, Transaction, TransactionTable


@dataclass
class Conn:
    conid: int
    closed: bool = False
    migration: MigrationState = field(default_factory=MigrationState)
    written: list[bytes] = field(default_factory=list)

    def write_reply(self, data: bytes, close_after: bool = False) -> None:
        self.written.append(data)


def tx(tid: bytes, origin: Conn, out: int = 7) -> Transaction:
    head = b"MSRP o SEND\r\nTo-Path: ta b\r\nFrom-Path: a\r\nMessage-ID: m\r\nByte-Range: 1-3/3\r\n"
    t = Transaction(tid, origin, b"o" + tid, b"SEND", b"yes", head, b"a", b"ta", b"ta")
    t.out = out
    return t


def test_message_id_and_byte_range_come_from_the_kept_head() -> None:
    kept = tx(b"h1", Conn(1))
    assert (kept.message_id, kept.byte_range) == (b"m", b"1-3/3")


def test_match_needs_the_connection_it_went_out_on() -> None:
    table, origin = TransactionTable(30.0), Conn(1)
    first = tx(b"t1", origin, out=7)
    table.add(first, 100.0)
    assert origin.migration.tx_open == 1 and b"t1" in table
    assert table.match(b"t1", (8,)) is None  # another connection: untouched
    assert table.match(b"t2", (7,)) is None
    assert table.match(b"t1", (9, 3, 7)) is first  # moved since: a former id counts
    table.end(first)
    table.end(first)  # twice is once
    assert origin.migration.tx_open == 0 and len(table) == 0
    assert table.match(b"t1", (7,)) is None


def test_expired_in_deadline_order_and_skips_ended_and_restarted() -> None:
    table, origin = TransactionTable(30.0), Conn(1)
    a, b, c = tx(b"a1", origin), tx(b"b1", origin), tx(b"c1", origin)
    table.add(a, 0.0)
    table.add(b, 1.0)
    table.add(c, 2.0)
    table.end(b)  # answered
    table.restart(a, 5.0)  # a streamed chunk's end-line went out later
    assert table.expired(29.9) == []
    assert table.expired(32.0) == [c]
    assert table.expired(34.9) == []
    assert table.expired(35.0) == [a]
    assert len(table) == 0 and origin.migration.tx_open == 0
    assert a.ended and c.ended


def test_bound_per_origin_connection() -> None:
    table, busy, other = TransactionTable(30.0, max_per_conn=2), Conn(1), Conn(2)
    table.add(tx(b"x1", busy), 0.0)
    assert not table.full(busy)
    table.add(tx(b"x2", busy), 0.0)
    assert table.full(busy) and not table.full(other)
    table.end(table.live[b"x1"])
    assert not table.full(busy)


def test_origin_with_live_transactions_does_not_move() -> None:
    from msrpd.workers.migrate.colocate import ready_to_move

    class Movable(Conn):
        def bytes_to_carry(self) -> bytes:
            return b""

    conn = Movable(1, migration=MigrationState(movable=True))
    assert ready_to_move(conn, False) == b""  # type: ignore[arg-type]
    table = TransactionTable(30.0)
    table.add(tx(b"p1", conn), 0.0)
    assert ready_to_move(conn, False) is None  # type: ignore[arg-type]
    table.end(table.live[b"p1"])
    assert ready_to_move(conn, False) == b""  # type: ignore[arg-type]


def test_a_streamed_chunk_times_out_from_its_end_line() -> None:
    """The timer runs from the last byte written (RFC 4976 §6.4.1): a chunk still streaming
    after the timeout is not timed out."""
    table, origin = TransactionTable(30.0), Conn(1)
    big = tx(b"s1", origin)
    table.add(big, 0.0, whole=False)
    assert table.expired(1000.0) == [] and b"s1" in table
    table.restart(big, 1000.0)
    assert table.expired(1029.9) == []
    assert table.expired(1030.0) == [big]


def test_answered_transactions_do_not_pile_up() -> None:
    """Answers come in milliseconds, the timeout is 30 s: the deadline deque is compacted,
    so what it holds stays near the live transactions, and order is kept."""
    table, origin = TransactionTable(30.0), Conn(1)
    slow = tx(b"slow", origin)
    table.add(slow, 0.0)
    for n in range(10 * COMPACT_SLACK):
        t = tx(b"f%d" % n, origin)
        table.add(t, 1.0 + n / 1e6)
        table.end(t)
    assert len(table._deadlines) <= 2 * len(table) + COMPACT_SLACK + 1
    last = tx(b"last", origin)
    table.add(last, 2.0)
    assert table.expired(40.0) == [slow, last]


def test_tid_source_draws_distinct_ids_of_its_worker() -> None:
    """Ids name the worker and are 80 random bits each, pooled reads included."""
    ids = TidSource(3, 7)
    drawn = [ids() for _ in range(3 * TidSource.POOL + 5)]
    assert len(set(drawn)) == len(drawn)
    assert {tid_owner(t) for t in drawn} == {(3, 7)}
    assert all(len(t) == 26 and t.startswith(ids.prefix) for t in drawn)
