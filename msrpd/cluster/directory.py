"""The session directory (issue 17): token -> the node holding its session, in Redis keys that
expire with the token, so another node can find where a session lives (forwarding and the
cluster-wide listing methods build on it).

Rules:
- The node's cmap is the truth; Redis is told what changed since the last write it took
  (changes()), every heartbeat: an AUTH's new token, a re-AUTH's new expiry, a session gone
  however it went (its connection closed, killed, its worker dead, expired). A write lost to
  a Redis outage is not committed, so the next one after the outage carries it again; after
  a reconnect everything is written again (full), since Redis may have lost it all.
- An agent that starts (or restarts) adopts the entries Redis holds for its node, so those of
  sessions that ended while no agent ran are removed, not left until they expire.
- A token past its expiry is not written (the cmap's sweep removes it soon).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["Directory", "DirectoryChanges"]

_UNKNOWN: Final = 0.0
"""The expiry of an adopted entry: never equal to a live session's."""


@dataclass(frozen=True, slots=True)
class DirectoryChanges:
    upserts: dict[str, float]
    """Token -> expiry (Unix time) to write."""
    removals: list[str]
    """Tokens to remove."""
    live: int
    """The node's live sessions, once these are written."""

    def __bool__(self) -> bool:
        return bool(self.upserts or self.removals)


class Directory:
    def __init__(self) -> None:
        self.published: dict[str, float] = {}
        """What Redis holds for this node, as far as this agent knows."""
        self.adopted = False
        """adopt() ran: once, at the first session with Redis."""

    def adopt(self, tokens: list[str]) -> None:
        """Redis holds these tokens for this node (found at the agent's start)."""
        self.adopted = True
        for token in tokens:
            self.published.setdefault(token, _UNKNOWN)

    def changes(self, cmap: Mapping[str, float], now: float, *, full: bool) -> DirectoryChanges:
        """What to write so Redis holds the live sessions of `cmap` (token -> expiry)."""
        live = {token: expires for token, expires in cmap.items() if expires >= now}
        published = self.published
        upserts = live if full else {t: e for t, e in live.items() if published.get(t) != e}
        removals = [token for token in published if token not in live]
        return DirectoryChanges(upserts, removals, len(live))

    def commit(self, changes: DirectoryChanges) -> None:
        """Redis took `changes`."""
        self.published.update(changes.upserts)
        for token in changes.removals:
            del self.published[token]

    @property
    def count(self) -> int:
        return len(self.published)
