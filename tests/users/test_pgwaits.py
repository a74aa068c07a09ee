"""A frame waiting for PostgreSQL (routing/waits.py) is answered whatever comes meanwhile: a
graceful stop, a reload, the client half-closing; and many lookups queued behind one slow
one do not declare the database down. Live msrpd processes and a private PostgreSQL whose
subscriber table another transaction holds locked (as test_postgres.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from msrpd.users.remote import MAX_LOOKUPS

from ..conformance.util import nothing_more
from ..integration.relay import Relay, wait_for
from ..msrpclient import MsrpClient
from ..pgserver import PgServer
from .conftest import Tls, add_user, new_database, pg_relay, started
from .test_postgres import _waiting_on_a_lock

# Asks the store before it answers (waits.py's rule); plain TCP, so a half-close is a TCP
# one (asyncio's TLS transport closes on EOF whatever the protocol asks).
# X-Late: answers, then asks (breaking the rule); X-Swallow: asks inside `except Exception`.
ROUTE = """
def ksr_msrp_event(msrp):
    if msrp.is_reply():
        return
    user = msrp.hdr("X-User") or ""
    if msrp.hdr("X-Late"):
        msrp.t_reply(200, "OK")
        msrp.user_ha1(user)
        return
    if msrp.hdr("X-Swallow"):
        try:
            found = msrp.user_ha1(user)
        except Exception:
            found = None
    else:
        found = msrp.user_ha1(user)
    if found:
        msrp.t_reply(200, "OK")
    else:
        msrp.t_reply(404, "Not Found")
"""


def _relay(pg: PgServer, tls: Tls, tmp_path: Path, db: str, **auth: object) -> Relay:
    url = new_database(pg, db)
    route = tmp_path / "ask.py"
    route.write_text(ROUTE)
    relay = pg_relay(tls, url, **{"users_timeout": 8, **auth})
    relay.sections["msrp"] = {"route": str(route)}
    relay.sections["core"]["drain_timeout"] = 15
    relay.write_config()
    started(relay)
    add_user(relay, "cat", "cat-pw")
    return relay


def _ask(c: MsrpClient, user: str, *extra: tuple[str, str]) -> bytes:
    return c.request("AUTH", c.relay_uri, [("X-User", user), *extra])


@contextmanager
def _locked(pg: PgServer, db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg.url(db=db)) as locker:
        locker.execute("LOCK TABLE subscriber IN ACCESS EXCLUSIVE MODE")
        yield locker
        locker.rollback()


def _answered(c: MsrpClient, tid: bytes, code: int) -> None:
    got = c.recv(10).frame
    assert (got.tid, got.code) == (tid, code), got.buf


@pytest.mark.parametrize("command", ["stop", "reload"])
def test_an_auth_waiting_for_the_database_is_answered_across_a_stop_or_reload(
    pg: PgServer, tls: Tls, tmp_path: Path, command: str
) -> None:
    """The lookup waits on a lock when the command comes; the worker waits for it (within
    drain_timeout) and answers 200 once the lock goes, instead of closing the connection."""
    db = f"wait_{command}"
    relay = _relay(pg, tls, tmp_path, db)
    c = MsrpClient(relay.port)
    result: list[int] = []
    try:
        with _locked(pg, db) as locker:
            tid = _ask(c, "cat")
            wait_for(lambda: _waiting_on_a_lock(pg, db), 10, "the lookup waiting on the lock")
            runner = threading.Thread(
                target=lambda: (
                    result.append(relay.cli(command, "--timeout", "30").returncode)
                    if command == "stop"
                    else result.append(relay.cli(command).returncode)
                )
            )
            runner.start()
            nothing_more(c, wait=2.0)  # not answered, not closed: waiting, past QUIET
            assert _waiting_on_a_lock(pg, db)
            locker.rollback()
        _answered(c, tid, 200)
        runner.join(30)
        assert result == [0]
        if command == "stop":
            with pytest.raises(EOFError):
                c.recv(5)  # then closed: nothing more
        else:
            # The session goes on with the new generation: a second ask (cached or not).
            tid = _ask(c, "cat")
            _answered(c, tid, 200)
            nothing_more(c, wait=0.3)
    finally:
        c.close()
        relay.stop()


def test_an_auth_then_a_half_close_is_answered_before_the_close(
    pg: PgServer, tls: Tls, tmp_path: Path
) -> None:
    db = "wait_eof"
    relay = _relay(pg, tls, tmp_path, db)
    c = MsrpClient(relay.port)
    try:
        with _locked(pg, db) as locker:
            tid = _ask(c, "cat")
            wait_for(lambda: _waiting_on_a_lock(pg, db), 10, "the lookup waiting on the lock")
            c.sock.shutdown(socket.SHUT_WR)
            time.sleep(0.5)  # the EOF reaches the worker while the frame waits
            locker.rollback()
        _answered(c, tid, 200)
        with pytest.raises(EOFError):
            c.recv(5)
    finally:
        c.close()
        relay.stop()


def _lock_waiters(pg: PgServer, db: str) -> int:
    """Sessions of `db` (msrpd's and the test's) waiting for a lock."""
    with psycopg.connect(pg.url(db=db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (db,),
        ).fetchone()
    return 0 if row is None else int(row[0])


def _second_locker(pg: PgServer, db: str, go: threading.Event) -> None:
    with psycopg.connect(pg.url(db=db)) as locker:
        locker.execute("LOCK TABLE subscriber IN ACCESS EXCLUSIVE MODE")
        go.wait(30)
        locker.rollback()


def test_a_lookup_queued_past_the_timeout_fails_alone_and_the_database_stays_up(
    pg: PgServer, tls: Tls, tmp_path: Path
) -> None:
    """users_timeout 3 s. A's query waits on a lock until t0+1.5; B's query then waits on a
    second lock until t0+3.6 (within its own 3 s); C, queued behind both, has waited for its
    turn past t0+3: C alone is answered 500, A and B get their answers, the database is not
    declared down (a miss right after is asked, not refused) and B's query was not cut."""
    db = "wait_queue"
    relay = _relay(pg, tls, tmp_path, db, users_timeout=3)
    ca, cb, cc, cd = (MsrpClient(relay.port) for _ in range(4))
    go = threading.Event()
    second = threading.Thread(target=_second_locker, args=(pg, db, go))
    try:
        with _locked(pg, db) as locker:
            t0 = time.monotonic()
            tid_a = _ask(ca, "cat")
            wait_for(lambda: _waiting_on_a_lock(pg, db), 10, "A waiting on the lock")
            tid_b, tid_c = _ask(cb, "nobody-b"), _ask(cc, "nobody-c")
            second.start()  # queued in PostgreSQL behind A: B's query meets it next
            wait_for(lambda: _lock_waiters(pg, db) == 2, 10, "the second locker queued")
            time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
            locker.rollback()
        _answered(ca, tid_a, 200)
        wait_for(lambda: _waiting_on_a_lock(pg, db), 10, "B waiting on the second lock")
        _answered(cc, tid_c, 500)  # at t0+3: its turn never came
        assert time.monotonic() < t0 + 3.6, "too slow a machine for this test's timings"
        nothing_more(cb, wait=max(0.0, t0 + 3.6 - time.monotonic()))
        go.set()
        second.join(10)
        _answered(cb, tid_b, 404)
        tid_d = _ask(cd, "nobody-d")
        _answered(cd, tid_d, 404)  # asked: the database is not deemed down
        nothing_more(ca, cb, cc, cd, wait=0.2)
        assert "user database" not in relay.log()  # no outage logged, nor its end
    finally:
        go.set()
        for c in (ca, cb, cc, cd):
            c.close()
        relay.stop()


def test_misses_over_max_lookups_are_answered_500_at_once_and_the_rest_after_the_lock(
    pg: PgServer, tls: Tls, tmp_path: Path
) -> None:
    db = "wait_cap"
    relay = _relay(pg, tls, tmp_path, db)
    clients = [MsrpClient(relay.port) for _ in range(MAX_LOOKUPS + 1)]
    quiet = MsrpClient(relay.port)
    try:
        with _locked(pg, db) as locker:
            tids = [_ask(c, f"made-up-{i}") for i, c in enumerate(clients[:-1])]
            wait_for(lambda: _waiting_on_a_lock(pg, db), 10, "the first lookup on the lock")
            time.sleep(0.5)  # every ask above has reached the worker
            over = _ask(clients[-1], "one-too-many")
            _answered(clients[-1], over, 500)
            _ask(quiet, "one-too-many", ("Failure-Report", "no"))  # no answer at all
            nothing_more(quiet, *clients[:3], wait=0.3)
            locker.rollback()
        for c, tid in zip(clients[:-1], tids, strict=True):
            _answered(c, tid, 404)
        nothing_more(*clients[-3:], wait=0.2)
        assert "user database" not in relay.log()
    finally:
        for c in (*clients, quiet):
            c.close()
        relay.stop()


def test_a_route_that_asks_after_answering_is_not_routed_twice(
    pg: PgServer, tls: Tls, tmp_path: Path
) -> None:
    """A route that answers and then asks for a user not cached gets Unavailable (logged): its
    frame is answered once, not routed again; a route asking inside `except Exception`
    still waits (NotYet is a BaseException) and answers from the database."""
    relay = _relay(pg, tls, tmp_path, "wait_rule")
    c = MsrpClient(relay.port)
    try:
        tid = _ask(c, "cat", ("X-Late", "1"))
        _answered(c, tid, 200)
        nothing_more(c, wait=1.0)  # the lookup landed meanwhile: no second 200, no 500
        assert "asked for a user after it answered or relayed: unavailable" in relay.log()
        tid = _ask(c, "cat", ("X-Swallow", "1"))  # cached by the lookup above: at once
        _answered(c, tid, 200)
        relay.cli("user", "add", "dan", "--password", "dan-pw")
        tid = _ask(c, "dan", ("X-Swallow", "1"))
        _answered(c, tid, 200)  # waited for the database, not swallowed into a 404
        nothing_more(c, wait=0.3)
    finally:
        c.close()
        relay.stop()
