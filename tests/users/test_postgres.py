"""Users in PostgreSQL ([auth] users = "postgresql://..."), against live msrpd processes and a
private PostgreSQL (tests/pgserver.py): several relays sharing one database, Kamailio's own
subscriber table, the database down and back, a lookup held by a lock while the worker goes
on, a bad URL. README "Users"."""

from __future__ import annotations

import json
import re
import time

import psycopg

from msrpd.protocol import Frame
from msrpd.protocol import digest as dg

from ..conformance.util import nothing_more, send
from ..integration.relay import REALM, Relay, wait_for
from ..msrpclient import MsrpClient
from ..pgserver import PgServer
from .conftest import ROLE_PASSWORD, Tls, add_user, client, new_database, pg_relay, started

PASSWORDS = {"ann": "ann-pw", "ben": "ben-pw", "cat": "cat-pw", "dave": "dave-pw"}
UNAVAILABLE = b"MSRP %s 500 Server Error (user database unavailable)\r\n"
# Kamailio 5.6's utils/kamctl/postgres/auth_db-create.sql (subscriber, table version 7).
KAMAILIO_SUBSCRIBER = (
    """CREATE TABLE subscriber (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
)""",
    "CREATE INDEX subscriber_username_idx ON subscriber (username)",
)


def auth(
    relay: Relay, tls: Tls, user: str, password: str | None = None
) -> tuple[MsrpClient, Frame]:
    """A new TLS connection's AUTH (401, then digest): the client and the final answer."""
    c = client(relay, tls)
    final = c.auth(user, password or PASSWORDS[user], REALM)
    return c, final.frame


def authorization(c: MsrpClient, challenge: Frame, user: str) -> str:
    """The Authorization value answering `challenge` for `user` (as MsrpClient.auth)."""
    found = re.search(r'nonce="([^"]+)"', (challenge.header("WWW-Authenticate") or b"").decode())
    assert found, challenge.buf
    creds = dg.Credentials(user, REALM, found[1], c.relay_uri, "", "auth", "00000001", "ab12")
    response = dg.response_for(creds, dg.ha1(user, REALM, PASSWORDS[user]), "AUTH")
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{found[1]}", '
        f'uri="{c.relay_uri}", response="{response}", qop=auth, nc=00000001, cnonce="ab12"'
    )


def stats(relay: Relay) -> dict[str, int]:
    out = relay.cli("ctl", "--json", "stats.get", "users_")
    assert out.returncode == 0, out.stderr
    return {k: int(v) for k, v in json.loads(out.stdout)["total"].items()}


def counted(relay: Relay, want: dict[str, int]) -> None:
    """The users_ counters reach `want` (workers publish once a second), and stay there."""
    wait_for(lambda: stats(relay) == want, 5, f"counters {want}, got {stats(relay)}")
    time.sleep(1.2)
    assert stats(relay) == want


def exchange(a: MsrpClient, b: MsrpClient, rounds: int) -> None:
    """SENDs both ways through the relay, each one checked where it arrives, in order, once."""
    for i in range(rounds):
        for src, dst in ((a, b), (b, a)):
            body = f"{i} from {src.uri}".encode()
            send(src, f"{dst.use_path} {dst.uri}", body, mid=f"m{i}", fr="no")
            got = dst.recv()
            assert got.frame.method == b"SEND" and got.body == body, got.frame.buf
    nothing_more(a, b, wait=0.2)


def close_all(*clients: MsrpClient) -> None:
    for c in clients:
        c.close()


def test_a_user_added_once_auths_on_three_relays_and_not_after_del_and_the_ttl(
    pg: PgServer, tls: Tls
) -> None:
    ttl = 8
    url = new_database(pg, "shared")
    relays = [pg_relay(tls, url, users_cache_ttl=ttl) for _ in range(3)]
    clients: list[MsrpClient] = []
    try:
        for relay in relays:
            started(relay)
        add_user(relays[0], "cat", PASSWORDS["cat"])
        listed = relays[2].cli("user", "list")
        assert (listed.returncode, listed.stdout) == (0, f"cat\t{REALM}\n"), listed.stderr
        for relay in relays:
            c, final = auth(relay, tls, "cat")
            clients.append(c)
            assert final.code == 200 and final.header("Authentication-Info"), final.buf
        last_lookup = time.monotonic()
        gone = relays[1].cli("user", "del", "cat")
        assert (gone.returncode, gone.stdout) == (0, "user cat deleted\n"), gone.stderr
        # Within the TTL each relay still has cat's answer: the deleted user still AUTHs.
        c, final = auth(relays[0], tls, "cat")
        clients.append(c)
        assert final.code == 200, final.buf
        assert time.monotonic() < last_lookup + ttl - 1  # else the check above proves nothing
        listed = relays[2].cli("user", "list")
        assert (listed.returncode, listed.stdout) == (0, ""), listed.stderr
        time.sleep(max(0.0, last_lookup + ttl + 0.5 - time.monotonic()))
        for relay in relays:
            c, final = auth(relay, tls, "cat")
            clients.append(c)
            assert final.code == 401, final.buf
        # Each relay asked the database twice (the two misses); each AUTH that passed read
        # the HA1 from the cache twice (the check, Authentication-Info), the one refused once.
        counted(relays[0], _users(hits=2 + 2 + 1, lookups=2))
        for relay in relays[1:]:
            counted(relay, _users(hits=2 + 1, lookups=2))
        for relay in relays:
            assert ROLE_PASSWORD not in relay.log()
    finally:
        close_all(*clients)
        for relay in relays:
            relay.stop()


def _users(
    hits: int = 0, lookups: int = 0, failures: int = 0, unavailable: int = 0
) -> dict[str, int]:
    return {
        "users_cache_hits": hits,
        "users_db_lookups": lookups,
        "users_db_failures": failures,
        "users_unavailable": unavailable,
    }


def test_kamailio_s_own_subscriber_table_works_as_it_is(pg: PgServer, tls: Tls) -> None:
    """The table as Kamailio's kamdbctl creates it, owned by another role, msrpd granted only
    what it needs; a user provisioned by Kamailio's tools (password, ha1, ha1b) AUTHs, and
    `msrpd user add` writes only username, domain and ha1 (the others keep their defaults)."""
    url = new_database(pg, "kamailio")
    pg.execute(
        *KAMAILIO_SUBSCRIBER,
        "GRANT SELECT, INSERT, UPDATE, DELETE ON subscriber TO msrpd",
        "GRANT USAGE ON SEQUENCE subscriber_id_seq TO msrpd",
        # As kamctl add: the password in clear, ha1 and ha1b (user@domain:realm:password).
        f"INSERT INTO subscriber (username, domain, password, ha1, ha1b) VALUES ('dave', "
        f"'{REALM}', 'dave-pw', md5('dave:{REALM}:dave-pw'), md5('dave@{REALM}:{REALM}:dave-pw'))",
        db="kamailio",
    )
    relay = started(pg_relay(tls, url, users_table="subscriber"))
    clients: list[MsrpClient] = []
    try:
        add_user(relay, "ann", "first-pw")
        add_user(relay, "ann", PASSWORDS["ann"])  # replaced: one row, new ha1
        with psycopg.connect(pg.url(db="kamailio")) as db:
            rows = db.execute(
                "SELECT username, domain, password, ha1, ha1b FROM subscriber ORDER BY id"
            ).fetchall()
        ann_ha1 = dg.ha1("ann", REALM, PASSWORDS["ann"])
        assert rows == [
            ("dave", REALM, "dave-pw", dg.ha1("dave", REALM, "dave-pw"), rows[0][4]),
            ("ann", REALM, "", ann_ha1, ""),
        ]
        listed = relay.cli("user", "list").stdout
        assert listed == f"ann\t{REALM}\ndave\t{REALM}\n"
        for user in ("dave", "ann"):
            c, final = auth(relay, tls, user)
            clients.append(c)
            assert final.code == 200, final.buf
        c, final = auth(relay, tls, "ann", "first-pw")
        clients.append(c)
        assert final.code == 401, final.buf
    finally:
        close_all(*clients)
        relay.stop()


def test_database_down_cached_users_auth_others_get_500_relaying_goes_on_and_it_comes_back(
    pg: PgServer, tls: Tls
) -> None:
    url = new_database(pg, "outage")
    relay = started(pg_relay(tls, url, users_cache_ttl=300))
    clients: list[MsrpClient] = []
    refused = 0
    try:
        for user in ("ann", "ben", "cat"):
            add_user(relay, user, PASSWORDS[user])
        a, final_a = auth(relay, tls, "ann")
        b, final_b = auth(relay, tls, "ben")
        clients += [a, b]
        assert (final_a.code, final_b.code) == (200, 200)
        pg.stop()
        # A cached user AUTHs again, on a new connection.
        c, final = auth(relay, tls, "ann")
        clients.append(c)
        assert final.code == 200, final.buf
        # One that is not gets 500, every time, never a hang.
        for _ in range(3):
            c, final = auth(relay, tls, "cat")
            clients.append(c)
            assert bytes(final.buf).startswith(UNAVAILABLE % final.tid), final.buf
            refused += 1
        exchange(a, b, 10)
        # The CLI says so too, without the password.
        out = relay.cli("user", "add", "dave", "--password", "x")
        assert out.returncode == 1 and out.stderr.startswith(
            f"msrpd: user store: postgresql://msrpd@127.0.0.1:{pg.port}/outage: "
        ), out.stderr
        assert ROLE_PASSWORD not in out.stderr
    finally:
        pg.start()
    try:
        # Back: the uncached user AUTHs (after at most RETRY_AFTER, remote.py).
        def cat_auths() -> bool:
            nonlocal refused
            c, final = auth(relay, tls, "cat")
            clients.append(c)
            if final.code == 500:
                refused += 1
                return False
            assert final.code == 200, final.buf
            return True

        wait_for(cat_auths, 10, "cat's AUTH once the database is back")
        exchange(a, b, 3)
        log = relay.log()
        name = f"postgresql://msrpd@127.0.0.1:{pg.port}/outage"
        assert log.count(f"user database {name} unavailable: ") == 1, log
        assert log.count(f"user database {name} answers again") == 1, log
        assert ROLE_PASSWORD not in log
        # One per 500: the workers publish their counters once a second.
        wait_for(lambda: stats(relay)["users_unavailable"] == refused, 5, "the counters")
        totals = stats(relay)
        assert totals["users_db_failures"] >= 1
    finally:
        close_all(*clients)
        relay.stop()


def test_a_lookup_held_by_a_lock_stalls_only_its_own_frames_which_keep_their_order(
    pg: PgServer, tls: Tls
) -> None:
    """One worker: while cat's AUTH waits for a subscriber table another transaction holds
    locked, ann and ben keep exchanging frames through that worker; cat's frames after the
    AUTH wait behind it, and everything is answered in order once the lock goes."""
    url = new_database(pg, "locked")
    relay = started(pg_relay(tls, url, children=1, users_cache_ttl=300, users_timeout=30))
    clients: list[MsrpClient] = []
    try:
        for user in ("ann", "ben", "cat"):
            add_user(relay, user, PASSWORDS[user])
        a, final_a = auth(relay, tls, "ann")
        b, final_b = auth(relay, tls, "ben")
        c = client(relay, tls)
        clients += [a, b, c]
        assert (final_a.code, final_b.code) == (200, 200)
        tid = c.request("AUTH", c.relay_uri)
        challenge = c.recv().frame
        assert (challenge.tid, challenge.code) == (tid, 401)  # no lookup: answered at once
        with psycopg.connect(pg.url(db="locked")) as locker:
            locker.execute("LOCK TABLE subscriber IN ACCESS EXCLUSIVE MODE")
            creds = [("Authorization", authorization(c, challenge, "cat"))]
            tids = [
                c.request("AUTH", c.relay_uri, creds),
                c.request("AUTH", c.relay_uri),
                send(c, c.relay_uri, b"to the relay itself"),
            ]
            wait_for(lambda: _waiting_on_a_lock(pg, "locked"), 10, "the lookup waiting on the lock")
            exchange(a, b, 20)
            nothing_more(c, wait=0.5)
            assert _waiting_on_a_lock(pg, "locked")  # still waiting all along
            locker.rollback()
        answers = [c.recv(10).frame for _ in tids]
        assert [(f.tid, f.code) for f in answers] == list(zip(tids, (200, 401, 403), strict=True))
        assert answers[0].header("Use-Path")
        nothing_more(c, wait=0.2)
        exchange(a, b, 2)
    finally:
        close_all(*clients)
        relay.stop()


def _waiting_on_a_lock(pg: PgServer, db: str) -> bool:
    with psycopg.connect(pg.url(db=db), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'msrpd' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] == 1


def test_a_bad_url_fails_msrpd_start_with_a_clear_message(tls: Tls) -> None:
    relay = pg_relay(tls, "postgresql://msrpd:s3cr3t-pw@127.0.0.1:99999/users")
    try:
        result = relay.start()
        assert result.returncode == 2, result.stderr
        assert (
            "auth.users: not a valid PostgreSQL URL (postgresql://msrpd@127.0.0.1:99999/users): "
            "port '99999'"
        ) in result.stderr
        assert "s3cr3t-pw" not in result.stderr + result.stdout
        assert relay.pid() is None
    finally:
        relay.stop()


def test_a_mixed_case_table_name_is_created_once_and_used_as_quoted(pg: PgServer, tls: Tls) -> None:
    """users_table = "Subscriber": the statements quote it, and so does the check before
    CREATE TABLE (to_regclass would fold a bare name to lower case and find none)."""
    url = new_database(pg, "mixedcase")
    relay = started(pg_relay(tls, url, users_table="Subscriber"))
    clients: list[MsrpClient] = []
    try:
        add_user(relay, "cat", "old-pw")
        add_user(relay, "cat", PASSWORDS["cat"])  # the table exists: found, not created again
        with psycopg.connect(pg.url(db="mixedcase"), autocommit=True) as conn:
            rows = conn.execute('SELECT username, domain FROM "Subscriber"').fetchall()
            lower = conn.execute("SELECT to_regclass('subscriber')").fetchone()
        assert rows == [("cat", REALM)] and lower == (None,)
        c, final = auth(relay, tls, "cat")
        clients.append(c)
        assert final.code == 200, final.buf
    finally:
        close_all(*clients)
        relay.stop()
