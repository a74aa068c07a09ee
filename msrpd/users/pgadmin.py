"""The PostgreSQL user store for `msrpd user add|del|list`: one short-lived connection.

Rules: add replaces the HA1 of an existing row (UPDATE, then INSERT when there was none, in
one transaction), so it needs no unique index and leaves Kamailio's other columns alone. The
table is created, in Kamailio's layout, only by add and only when it does not exist (a check
first: an operator's account may lack the right to create tables where one already is).
Errors name the database by its redacted URL; the password never leaves the SecretUrl.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import sql

from ..config.secret import SecretUrl
from ..protocol.digest import ha1
from .pgsql import SubscriberSql

__all__ = ["PgUsers", "UserDbError"]

T = TypeVar("T")


class UserDbError(Exception):
    """The database refused or could not be reached; the message is safe to show."""


class PgUsers:
    """The UserStore face (store.py) over PostgreSQL."""

    def __init__(self, url: SecretUrl, table: str, timeout: float) -> None:
        self.url = url
        self.sql = SubscriberSql.build(table)
        self.timeout = timeout
        self._db: psycopg.Connection[tuple[object, ...]] | None = None

    def _conn(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._db is None:
            try:
                # libpq counts connect_timeout in whole seconds, at least 2; statement_timeout
                # keeps a command from waiting on a lock held elsewhere for ever.
                db = psycopg.connect(
                    self.url.url, autocommit=True, connect_timeout=max(2, round(self.timeout))
                )
                ms = sql.Literal(max(1, int(self.timeout * 1000)))
                db.execute(sql.SQL("SET statement_timeout = {}").format(ms))
                self._db = db
            except psycopg.Error as exc:
                raise UserDbError(f"{self.url.redacted}: {_reason(exc)}") from None
        return self._db

    def add(self, username: str, realm: str, password: str) -> None:
        digest = ha1(username, realm, password)

        def upsert(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            with conn.transaction():
                exists = conn.execute("SELECT to_regclass(%s)", (self.sql.regclass,)).fetchone()
                if exists is None or exists[0] is None:
                    conn.execute(self.sql.create)
                if conn.execute(self.sql.update, (digest, username, realm)).rowcount == 0:
                    conn.execute(self.sql.insert, (username, realm, digest))

        self._run(upsert)

    def delete(self, username: str, realm: str) -> bool:
        cur = self._run(lambda c: c.execute(self.sql.delete, (username, realm)))
        return cur.rowcount > 0

    def list(self) -> list[tuple[str, str]]:
        rows = self._run(lambda c: c.execute(self.sql.listing).fetchall())
        return [(str(u), str(d)) for u, d in rows]

    def _run(self, job: Callable[[psycopg.Connection[tuple[object, ...]]], T]) -> T:
        conn = self._conn()
        try:
            return job(conn)
        except psycopg.Error as exc:
            raise UserDbError(f"{self.url.redacted}: {_reason(exc)}") from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _reason(exc: psycopg.Error) -> str:
    """psycopg's message, first line (libpq's messages name host and user, never a password)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
