"""Each sender's share of a worker's token lookups (finder.py; README "Running a cluster"):
what one connection has asked, and whose share of a source address it takes.

Rules: a connection has at most PER_CONN questions out; the connections of one source
address (an IPv6 /64) PER_ADDR; a connection may have MISS_BURST questions answered "no node
holds it" in a burst, then MISS_RATE a second, its misses kept as a token bucket's debt. A
frame over a share waits (a Waiting), it is not refused: the token may be real.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import Final

__all__ = [
    "MISS_BURST",
    "MISS_RATE",
    "PER_ADDR",
    "PER_CONN",
    "Asker",
    "Later",
    "Waiting",
    "share_key",
]

logger = logging.getLogger(__name__)

PER_CONN: Final = 2
"""A connection's frames wait in turn for their answers: only one routed after its sender's
200 (a path naming this relay twice, README) leaves a question out without waiting."""
PER_ADDR: Final = 16
"""A quarter of a worker's questions (finder.MAX_IN_FLIGHT): four source addresses at least
to take them all."""
MISS_BURST: Final = 8
MISS_RATE: Final = 1.0


class Waiting:
    """What frames wait for (routing/waits.Pending): each routed again when it is done."""

    __slots__ = ("resumes",)

    def __init__(self) -> None:
        self.resumes: list[Callable[[], None]] = []

    def then(self, resume: Callable[[], None]) -> None:
        self.resumes.append(resume)

    def resume(self) -> None:
        for resume in self.resumes:
            try:
                resume()
            except Exception:  # one connection's failure must not strand the others
                logger.exception("resuming a frame that waited for a token lookup failed")


class Later(Waiting):
    """A connection's wait until it may ask again (out of misses): one timer for it."""

    __slots__ = ("timer",)

    def __init__(self) -> None:
        super().__init__()
        self.timer: asyncio.TimerHandle | None = None


class Asker:
    """What one connection asked (ConnEnv keeps it, its inner hops share it): its questions
    out, and its misses as a bucket's debt (MISS_BURST, paid back at MISS_RATE)."""

    __slots__ = ("addr", "debt", "later", "out", "paid", "peer")

    def __init__(self, peer: str, host: str) -> None:
        self.peer = peer
        self.addr = share_key(host)
        """Whose share of PER_ADDR it takes."""
        self.out: list[Waiting] = []
        """Its questions out, oldest first."""
        self.debt = 0.0
        self.paid = 0.0
        """When `debt` was last brought up to date (monotonic)."""
        self.later: Later | None = None
        """While its frames wait to ask again (out of misses)."""

    def owes(self, now: float) -> float:
        self.debt = max(0.0, self.debt - (now - self.paid) * MISS_RATE)
        self.paid = now
        return self.debt


def share_key(host: str) -> str:
    """The source address a share is counted under: `host` (workers/peers.source_host), an
    IPv6 address by its /64 (one host has many)."""
    if not host.startswith("["):
        return host
    try:
        return str(ipaddress.IPv6Network(f"{host[1:-1]}/64", strict=False))
    except ValueError:
        return host
