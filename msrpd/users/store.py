"""The user store's two faces, which each backend implements.

Rules: passwords are never stored, only HA1 = MD5(user:realm:password) (RFC 2617 §3.2.2.2),
which is what digest verification needs. `UserStore` is what `msrpd user add|del|list`
manages, synchronously (a command, not a worker). `Ha1Source` is what a worker's route asks
(ConnEnv.user_ha1): SQLite answers at once; PostgreSQL answers from a cache or raises
routing.waits.NotYet / Unavailable (remote.py).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Ha1Source", "UserStore"]


class UserStore(Protocol):
    def add(self, username: str, realm: str, password: str) -> None:
        """Add the user, or replace its HA1."""

    def delete(self, username: str, realm: str) -> bool:
        """False when there was no such user."""

    def list(self) -> list[tuple[str, str]]:
        """(username, realm) of every user, by realm then username."""

    def close(self) -> None: ...


class Ha1Source(Protocol):
    def get_ha1(self, username: str, realm: str) -> str | None:
        """The user's HA1 (hex), None when there is no such user; may raise NotYet or
        Unavailable (routing/waits.py)."""

    async def aclose(self) -> None:
        """The worker is exiting: let go of connections."""
