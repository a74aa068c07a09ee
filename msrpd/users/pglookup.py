"""A worker's connection to the PostgreSQL user store: one AsyncConnection on its own loop.

Rules:
- psycopg's AsyncConnection runs on the worker's event loop: no thread, and a lookup waits on
  the socket like any other I/O of the worker. Lookups go one at a time over one connection
  (a worker asks only on a cache miss, so one is plenty).
- A lookup waits for its turn at most `timeout` seconds; one still queued then fails alone
  (LookupSkipped: 500 for its AUTH, the database is not deemed down, the connection stays).
- Its query, connecting included, then ends within `timeout` seconds (asyncio.timeout, and
  statement_timeout on the server so a query stuck on a lock is given up there too): an AUTH
  waits at most twice users_timeout. A connection that failed or timed out is closed (the
  next lookup connects again); one whose query the server cancelled is kept, and that query
  is not tried again as after a restart.
- LookupFailed carries the cause to log; libpq's messages name the host and the user, never
  the password, and the URL itself is never part of one.
"""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from ..config.secret import SecretUrl
from .pgsql import SubscriberSql
from .remote import LookupFailed, LookupSkipped

__all__ = ["PgLookup"]

_Conn = psycopg.AsyncConnection[tuple[object, ...]]


class PgLookup:
    def __init__(self, url: SecretUrl, table: str, timeout: float) -> None:
        self.url = url
        self.sql = SubscriberSql.build(table)
        self.timeout = timeout
        self._db: _Conn | None = None
        self._turn = asyncio.Lock()  # one query at a time on the one connection

    async def fetch(self, username: str, realm: str) -> str | None:
        """The user's HA1, None when there is no such user; LookupFailed when the database
        cannot say within the timeout, LookupSkipped when other lookups kept the connection
        busy past it (this one never ran: the database is not deemed down for it)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._turn.acquire()
        except TimeoutError:
            raise LookupSkipped(f"queued past {self.timeout:g} s behind other lookups") from None
        try:
            return await self._fetch(username, realm)
        finally:
            self._turn.release()

    async def _fetch(self, username: str, realm: str) -> str | None:
        """fetch, holding the turn: only the query (and connecting) is timed."""
        try:
            async with asyncio.timeout(self.timeout):
                reused = self._db is not None
                try:
                    return await self._query(username, realm)
                except psycopg.errors.QueryCanceled:
                    raise  # statement_timeout: the server is there, the query was slow
                except psycopg.OperationalError:
                    if not reused:
                        raise
                    # The database restarted since the last lookup: once more, anew.
                    await self._drop()
                    return await self._query(username, realm)
        except TimeoutError:
            await self._drop()
            raise LookupFailed(f"no answer within {self.timeout:g} s") from None
        except psycopg.Error as exc:
            if not isinstance(exc, psycopg.errors.QueryCanceled):
                await self._drop()  # a cancelled query leaves the connection sound
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LookupFailed(reason) from None

    async def _query(self, username: str, realm: str) -> str | None:
        db = self._db or await self._connect()
        cur = await db.execute(self.sql.select_ha1, (username, realm))
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def _connect(self) -> _Conn:
        db = await psycopg.AsyncConnection.connect(self.url.url, autocommit=True)
        # The server gives a query up too (a lock held elsewhere): it never runs on unseen.
        ms = sql.Literal(max(1, int(self.timeout * 1000)))
        try:
            await db.execute(sql.SQL("SET statement_timeout = {}").format(ms))
        except BaseException:
            await db.close()
            raise
        self._db = db
        return db

    async def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def aclose(self) -> None:
        await self._drop()
