"""The user store behind `[auth] users`: usernames and HA1 digests, in SQLite or PostgreSQL.

Modules: `store.py` the two interfaces (what `msrpd user` manages, what a worker's route asks),
`sqlite.py` and `pgadmin.py` the stores, `pgsql.py` the subscriber table's statements,
`pglookup.py` a worker's connection to PostgreSQL, `cache.py` the answers a worker keeps,
`remote.py` a worker's lookups that wait without blocking, `open.py` the store the settings name.
Only `open.py` and the PostgreSQL modules import psycopg, and only when a URL is configured.
"""

from .store import Ha1Source, UserStore

__all__ = ["Ha1Source", "UserStore"]
