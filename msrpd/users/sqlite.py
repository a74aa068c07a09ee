"""The SQLite user store: a local file, table `users` (username, realm, ha1).

Rules: each lookup is one indexed SELECT on a connection opened per process (SQLite handles
must not cross fork); it is local and fast, so a worker's route asks it directly, no cache.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..protocol.digest import ha1

__all__ = ["SqliteUsers"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT NOT NULL,
    realm TEXT NOT NULL,
    ha1 TEXT NOT NULL,
    PRIMARY KEY (username, realm)
)
"""


class SqliteUsers:
    """Both faces of the store (store.py): UserStore and Ha1Source."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute(_SCHEMA)
        return self._db

    def get_ha1(self, username: str, realm: str) -> str | None:
        row = (
            self._conn()
            .execute("SELECT ha1 FROM users WHERE username = ? AND realm = ?", (username, realm))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def add(self, username: str, realm: str, password: str) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?)",
            (username, realm, ha1(username, realm, password)),
        )

    def delete(self, username: str, realm: str) -> bool:
        cur = self._conn().execute(
            "DELETE FROM users WHERE username = ? AND realm = ?", (username, realm)
        )
        return cur.rowcount > 0

    def list(self) -> list[tuple[str, str]]:
        rows = self._conn().execute("SELECT username, realm FROM users ORDER BY realm, username")
        return [(str(u), str(r)) for u, r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def aclose(self) -> None:
        self.close()
