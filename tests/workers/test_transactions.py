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
    blocked: list[object] = field(default_factory=list)

    def write_reply(self, data: bytes, close_after: bool = False) -> None:
        self.written.append(data)

    def block(self, dest: object) -> None:
        self.blocked.append(dest)

    def unblock(self, dest: object) -> None:
        self.blocked.remove(dest)

    def __hash__(self) -> int:
        return id(self)


def tx(tid: bytes, origin: Conn, out: int = 7) -> Transaction:
    head = b"MSRP o SEND\r\nTo-Path: ta b\r\nFrom-Path: a\r\nMessage-ID: m\r\nByte-Range: 1-3/3\r\n"
    spans = (22, 24, 26), (39, 40, 40)  # To-Path "ta b", From-Path "a" in `head`
    t = Transaction(tid, origin, b"o" + tid, b"SEND", b"yes", head, *spans, b"ta")
    t.out = out
    return t


def test_message_id_and_byte_range_come_from_the_kept_head() -> None:
    kept = tx(b"h1", Conn(1))
    assert (kept.message_id, kept.byte_range) == (b"m", b"1-3/3")
    assert (kept.from_path, kept.our_uri) == (b"a", b"ta")


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


def test_an_origin_at_the_bound_is_paused_until_half_have_ended() -> None:
    table, busy, other = TransactionTable(30.0, max_per_conn=4), Conn(1), Conn(2)
    for n in range(3):
        table.add(tx(b"x%d" % n, busy), 0.0)
    table.add(tx(b"o1", other), 0.0)
    assert busy.blocked == [] and not table.full(busy)
    table.add(tx(b"x3", busy), 0.0)  # the fourth: not read until its answers come
    assert busy.blocked == [table] and other.blocked == []
    for n in range(4, 8):  # the rest of the read in progress still goes...
        table.add(tx(b"x%d" % n, busy), 0.0)
    assert table.full(busy) and not table.full(other)  # ...up to twice the bound
    assert busy.blocked == [table]  # paused once
    for n in range(5):
        table.end(table.live[b"x%d" % n])
    assert busy.migration.tx_open == 3 and busy.blocked == [table]  # over half the bound
    table.end(table.live[b"x5"])
    assert busy.migration.tx_open == 2 and busy.blocked == []  # half: read again


def test_origin_with_live_transactions_moves_by_colocation_not_by_handover() -> None:
    from msrpd.workers.migrate.colocate import ready_to_move

    class Movable(Conn):
        def bytes_to_carry(self) -> bytes:
            return b""

    conn = Movable(1, migration=MigrationState(movable=True))
    assert ready_to_move(conn, False) == b""  # type: ignore[arg-type]
    table = TransactionTable(30.0)
    table.add(tx(b"p1", conn), 0.0)
    assert ready_to_move(conn, False) == b""  # type: ignore[arg-type]
    assert ready_to_move(conn, False, handover=True) is None  # type: ignore[arg-type]
    table.end(table.live[b"p1"])
    assert ready_to_move(conn, False, handover=True) == b""  # type: ignore[arg-type]


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


def test_a_closed_connection_ends_what_went_out_on_it_and_nothing_else() -> None:
    """`gone` (rfc-checklist §4.5): the live transactions whose request went out on one of
    the closed connection's ids (current and former), once; the index forgets what ended."""
    table, origin = TransactionTable(30.0), Conn(1)
    on7, on7b, on9, on3 = (
        tx(b"a7", origin, 7),
        tx(b"b7", origin, 7),
        tx(b"a9", origin, 9),
        tx(b"a3", origin, 3),
    )
    nowhere = tx(b"n1", origin, -1)  # a pass through our own URI: no connection of its own
    for t in (on7, on7b, on9, on3, nowhere):
        table.add(t, 0.0)
    table.end(on7b)  # answered: not failed again
    assert set(table.by_out) == {7, 9, 3}
    assert table.gone((7, 3)) == [on7, on3]  # the connection 7 had been 3 before a move
    assert on7.ended and on3.ended and not on9.ended
    assert set(table.by_out) == {9} and len(table) == 2 and origin.migration.tx_open == 2
    assert table.gone((7, 3)) == []  # once
    assert table.expired(31.0) == [on9, nowhere]  # the rest time out as ever
    assert table.by_out == {}


def test_live_workers_are_read_seldom() -> None:
    """LiveWorkers: trusted for TTL seconds; an unknown worker reads again after RETRY."""
    from msrpd.shm import HeartbeatRecord, WorkerState
    from msrpd.workers.liveworkers import RETRY, TTL, LiveWorkers

    now, reads = [0.0], []
    table = [(1, 1)]

    class Beats:
        def live(self) -> list[HeartbeatRecord]:
            reads.append(now[0])
            return [
                HeartbeatRecord(i, 100 + i, s, g, WorkerState.RUNNING, 0, 0)
                for i, (s, g) in enumerate(table)
            ] + [HeartbeatRecord(9, 0, 5, 5, WorkerState.RUNNING, 0, 0)]  # pid 0: a free record

    live = LiveWorkers(Beats(), lambda: now[0])
    assert (1, 1) in live and (5, 5) not in live and reads == [0.0]
    table.append((2, 1))
    now[0] = RETRY / 2
    assert (2, 1) not in live and live.current() == {(1, 1)} and len(reads) == 1
    now[0] = RETRY
    assert (2, 1) in live and len(reads) == 2  # a miss reads again
    now[0] = RETRY + TTL / 2
    table.remove((1, 1))
    assert live.current() == {(1, 1), (2, 1)} and len(reads) == 2
    now[0] = RETRY + TTL
    assert live.current() == {(2, 1)} and len(reads) == 3


def test_tid_source_draws_distinct_ids_of_its_worker() -> None:
    """Ids name the worker and are 80 random bits each, pooled reads included."""
    ids = TidSource(3, 7)
    drawn = [ids.draw() for _ in range(3 * TidSource.POOL + 5)]
    assert len(set(drawn)) == len(drawn)
    assert {tid_owner(t) for t in drawn} == {(3, 7)}
    assert all(len(t) == 26 and t.startswith(ids.prefix) for t in drawn)
