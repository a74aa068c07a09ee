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

from ..conformance.util import nothing_more
from ..integration.relay import Relay, wait_for
from ..msrpclient import MsrpClient
from ..pgserver import PgServer
from .conftest import Tls, add_user, new_database, pg_relay, started
from .test_postgres import _waiting_on_a_lock

# Asks the store before it answers (waits.py's rule); plain TCP, so a half-close is a TCP
# one (asyncio's TLS transport closes on EOF whatever the protocol asks).
ROUTE = """
def ksr_msrp_event(msrp):
    if msrp.is_reply():
        return
    if msrp.user_ha1(msrp.hdr("X-User") or ""):
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


def _ask(c: MsrpClient, user: str) -> bytes:
    return c.request("AUTH", c.relay_uri, [("X-User", user)])


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
                target=lambda: result.append(relay.cli(command, "--timeout", "30").returncode)
                if command == "stop"
                else result.append(relay.cli(command).returncode)
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
