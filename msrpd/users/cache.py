"""The answers a worker keeps from a remote user store: found (an HA1) and not found alike.

Rules: an answer lives `ttl` seconds from when it came, on the clock given (remote.TickClock:
time.monotonic() read every 0.25 s, so it stands still within one callback and a route that
asks twice while routing one frame gets the same answer). Misses are kept too, so a client
retrying an unknown name does not reach the database each time. At most `capacity` answers:
the oldest goes first (they expire in that order too), so made-up names cannot grow it
without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["ABSENT", "Ha1Cache"]


class _Absent:
    """Not in the cache (distinct from None: a cached "no such user")."""


ABSENT: Final = _Absent()


class Ha1Cache:
    __slots__ = ("_entries", "capacity", "clock", "ttl")

    def __init__(self, ttl: float, clock: Callable[[], float], capacity: int = 65536) -> None:
        self.ttl = ttl
        self.clock = clock
        self.capacity = capacity
        self._entries: dict[tuple[str, str], tuple[float, str | None]] = {}

    def get(self, key: tuple[str, str]) -> str | _Absent | None:
        entry = self._entries.get(key)
        if entry is None:
            return ABSENT
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return ABSENT
        return value

    def put(self, key: tuple[str, str], value: str | None) -> None:
        entries = self._entries
        entries.pop(key, None)  # re-inserted last: the dict's order is the expiry order
        while len(entries) >= self.capacity:
            del entries[next(iter(entries))]
        entries[key] = (self.clock() + self.ttl, value)

    def __len__(self) -> int:
        return len(self._entries)
