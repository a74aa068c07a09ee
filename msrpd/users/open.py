"""The user store `[auth] users` names: an SQLite path or a PostgreSQL URL (config/userdb.py).

Rules: psycopg is imported only when a URL is configured. A worker asks SQLite directly (local
and fast); PostgreSQL through a cache and lookups that never block its loop (remote.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..config.secret import SecretUrl
from ..config.sections import AuthSettings
from ..shm import StatsCounters
from .cache import Ha1Cache
from .remote import RemoteUsers, TickClock
from .sqlite import SqliteUsers
from .store import Ha1Source, UserStore

__all__ = ["open_store", "worker_source"]


def open_store(auth: AuthSettings) -> UserStore | None:
    """The store `msrpd user` manages; None when `[auth] users` is not set."""
    source = auth.users
    if isinstance(source, Path):
        return SqliteUsers(source)
    if isinstance(source, SecretUrl):
        from .pgadmin import PgUsers  # noqa: PLC0415 (psycopg: 0.2 s to import)

        return PgUsers(source, auth.users_table, auth.users_timeout)
    return None


def worker_source(
    auth: AuthSettings, loop: asyncio.AbstractEventLoop, counters: StatsCounters
) -> Ha1Source | None:
    """What a worker's routes ask for HA1s; None when `[auth] users` is not set."""
    source = auth.users
    if isinstance(source, Path):
        return SqliteUsers(source)
    if isinstance(source, SecretUrl):
        from .pglookup import PgLookup  # noqa: PLC0415 (psycopg: 0.2 s to import)

        clock = TickClock(loop)
        fetcher = PgLookup(source, auth.users_table, auth.users_timeout)
        cache = Ha1Cache(auth.users_cache_ttl, clock)
        return RemoteUsers(fetcher, cache, counters, loop, source.redacted, clock)
    return None
