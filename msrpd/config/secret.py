"""A server URL that carries a secret (a password): kept whole for the client, shown redacted."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SecretUrl"]


@dataclass(frozen=True, slots=True)
class SecretUrl:
    """`url` holds the secret and goes only to the client library; `redacted` is what logs,
    errors, repr and str may show."""

    url: str = field(repr=False)
    redacted: str

    def __str__(self) -> str:
        return self.redacted
