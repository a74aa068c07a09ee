"""A worker's lookups in a remote user store (PostgreSQL): answered from a cache, or waited
for without blocking anything but the frame that asked (routing/waits.py).

Rules:
- A cached answer (cache.py: found or not, for users_cache_ttl) is given at once.
- A miss starts one lookup per user (AUTHs for the same user share it) and raises NotYet: the
  AUTH waits, reading on its connection waits, the rest of the worker goes on.
- When the database fails (down, refusing, or silent past users_timeout) the AUTHs that waited
  are routed again and find it Unavailable (500), and so does every miss for RETRY_AFTER
  seconds; then the next miss tries again. Cached users keep AUTHing throughout. An outage is
  logged once when it starts, with its cause, and once when it ends.
- A lookup that never ran (queued behind others past users_timeout, pglookup.py) fails only
  the AUTHs that waited for it: 500, no outage. At most MAX_LOOKUPS lookups are in flight: a
  miss over it is answered 500 at once (many made-up names must not queue without bound).
  Both count as users_unavailable, like every 500 of ours.
- The cache's clock moves only between loop callbacks (TickClock), so a route that asks twice
  while routing one frame (the check, then Authentication-Info) gets the same answer, and the
  frame routed again right after its answer landed finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..routing.waits import NotYet, Unavailable
from ..shm import Counter, StatsCounters
from .cache import ABSENT, Ha1Cache

__all__ = [
    "MAX_LOOKUPS",
    "RETRY_AFTER",
    "Fetcher",
    "LookupFailed",
    "LookupSkipped",
    "RemoteUsers",
    "TickClock",
]

logger = logging.getLogger(__name__)

RETRY_AFTER = 1.0
"""Seconds after a failed lookup during which misses are answered 500 without trying."""
MAX_LOOKUPS = 256
"""Lookups (distinct users) a worker has in flight at most; one at a time on its one
connection, a few ms each: the last is asked well within users_timeout."""
_WHAT = "user database"
_TICK = 0.25


class LookupFailed(Exception):
    """The database did not answer: the message is the cause, safe to log."""


class LookupSkipped(Exception):
    """The lookup was never made (others kept the connection busy): says nothing of the
    database."""


class Fetcher(Protocol):
    """The database side (pglookup.PgLookup)."""

    async def fetch(self, username: str, realm: str) -> str | None:
        """The HA1 or None; raises LookupFailed (its message: the cause)."""

    async def aclose(self) -> None: ...


class TickClock:
    """time.monotonic() as of the last tick: it stands still within a callback."""

    __slots__ = ("_handle", "loop", "now")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = time.monotonic()
        self._handle = loop.call_later(_TICK, self._tick)

    def __call__(self) -> float:
        return self.now

    def _tick(self) -> None:
        self.now = time.monotonic()
        self._handle = self.loop.call_later(_TICK, self._tick)

    def stop(self) -> None:
        self._handle.cancel()


class _Waiting:
    """One lookup in flight: the frames to route again when it is done (waits.Pending)."""

    __slots__ = ("failed", "resumes")

    def __init__(self) -> None:
        self.resumes: list[Callable[[], None]] = []
        self.failed = False
        """No answer: the frames routed again (in done) find it Unavailable."""

    def then(self, resume: Callable[[], None]) -> None:
        self.resumes.append(resume)

    def done(self) -> None:
        for resume in self.resumes:
            try:
                resume()
            except Exception:  # one connection's failure must not strand the others
                logger.exception("resuming a frame that waited for the user database failed")


class RemoteUsers:
    """The Ha1Source face (store.py) of a remote store, for one worker."""

    def __init__(
        self,
        fetcher: Fetcher,
        cache: Ha1Cache,
        counters: StatsCounters,
        loop: asyncio.AbstractEventLoop,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetcher = fetcher
        self.cache = cache
        self.counters = counters
        self.loop = loop
        self.name = name
        """The database as logs may name it (the redacted URL)."""
        self.clock = clock
        self.down = False
        self._retry_at = 0.0
        self._waiting: dict[tuple[str, str], _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get_ha1(self, username: str, realm: str) -> str | None:
        key = (username, realm)
        found = self.cache.get(key)
        if found is not ABSENT:
            self.counters.add(Counter.users_cache_hits)
            return found if isinstance(found, str) else None
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.failed:
            self.counters.add(Counter.users_unavailable)
            raise Unavailable(_WHAT)
        if waiting is None:
            full = len(self._waiting) >= MAX_LOOKUPS
            if full or (self.down and self.clock() < self._retry_at):
                self.counters.add(Counter.users_unavailable)
                raise Unavailable(_WHAT)
            waiting = self._waiting[key] = _Waiting()
            task = self.loop.create_task(self._lookup(key, waiting))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        raise NotYet(waiting)

    async def _lookup(self, key: tuple[str, str], waiting: _Waiting) -> None:
        self.counters.add(Counter.users_db_lookups)
        try:
            value = await self.fetcher.fetch(*key)
        except LookupSkipped:
            waiting.failed = True
        except LookupFailed as exc:
            self.counters.add(Counter.users_db_failures)
            self._failed(str(exc))
            waiting.failed = True
        except Exception as exc:  # a bug: logged whole, and the AUTH gets 500 all the same
            logger.exception("user lookup failed")
            self.counters.add(Counter.users_db_failures)
            self._failed(type(exc).__name__)
            waiting.failed = True
        else:
            if self.down:
                self.down = False
                logger.warning("user database %s answers again", self.name)
            self.cache.put(key, value)
        try:
            waiting.done()
        finally:
            del self._waiting[key]  # after: the frames routed again see `failed`

    def _failed(self, cause: str) -> None:
        self._retry_at = self.clock() + RETRY_AFTER
        if not self.down:
            self.down = True
            logger.error(
                "user database %s unavailable: %s (AUTHs of users not cached get 500 until "
                "it answers; tried again at most every %g s)",
                self.name,
                cause,
                RETRY_AFTER,
            )

    async def aclose(self) -> None:
        """The worker is exiting: end the lookups (awaited, so none still uses the connection
        being closed), the clock's timer, then the connection."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(self.clock, TickClock):
            self.clock.stop()
        await self.fetcher.aclose()
