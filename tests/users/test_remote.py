"""A worker's lookups in a remote store (users/remote.py) on a real event loop: one lookup per
user in flight, the frames that waited resumed once, an outage logged once, the retry window.
The database side is a Fetcher whose answers the test gives (the PostgreSQL side is
tests/users/test_postgres.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from msrpd.routing.waits import NotYet, Unavailable
from msrpd.shm import Counter, StatsCounters
from msrpd.users.cache import Ha1Cache
from msrpd.users.remote import RETRY_AFTER, LookupFailed, LookupSkipped, RemoteUsers, TickClock

from .test_cache import Clock


class Fetcher:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.asked: list[tuple[str, str]] = []
        self.answers: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    async def fetch(self, username: str, realm: str) -> str | None:
        self.asked.append((username, realm))
        answer = self.answers[(username, realm)] = self.loop.create_future()
        return await answer

    async def aclose(self) -> None:
        pass


def _users(loop: asyncio.AbstractEventLoop) -> tuple[RemoteUsers, Fetcher, Clock]:
    clock, fetcher = Clock(), Fetcher(loop)
    cache = Ha1Cache(30.0, clock)
    return (
        RemoteUsers(fetcher, cache, StatsCounters(), loop, "postgresql://u@db/x", clock),
        fetcher,
        clock,
    )


def _pending(users: RemoteUsers, name: str) -> NotYet:
    with pytest.raises(NotYet) as caught:
        users.get_ha1(name, "r")
    return caught.value


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def _count(users: RemoteUsers) -> tuple[int, int, int, int]:
    v = users.counters.values
    return (
        v[Counter.users_cache_hits],
        v[Counter.users_db_lookups],
        v[Counter.users_db_failures],
        v[Counter.users_unavailable],
    )


def test_asks_for_one_user_share_one_lookup_and_each_waiter_resumes_once() -> None:
    async def main() -> None:
        users, fetcher, _ = _users(asyncio.get_running_loop())
        first, second = _pending(users, "ann"), _pending(users, "ann")
        assert first.pending is second.pending
        resumed: list[str] = []
        first.pending.then(lambda: resumed.append("a"))
        second.pending.then(lambda: resumed.append("b"))
        await _settle()
        assert fetcher.asked == [("ann", "r")]
        fetcher.answers[("ann", "r")].set_result("h" * 32)
        await _settle()
        assert resumed == ["a", "b"]
        assert users.get_ha1("ann", "r") == "h" * 32  # what the frames routed again find
        assert _count(users) == (1, 1, 0, 0)

    asyncio.run(main())


def test_an_outage_is_logged_once_refuses_misses_for_a_while_then_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        users, fetcher, clock = _users(asyncio.get_running_loop())
        caplog.set_level(logging.INFO, "msrpd.users.remote")
        wait = _pending(users, "ann")
        resumed: list[int] = []
        wait.pending.then(lambda: resumed.append(1))
        await _settle()
        fetcher.answers[("ann", "r")].set_exception(LookupFailed("connection refused"))
        await _settle()
        assert resumed == [1] and users.down
        for name in ("ann", "ben"):  # within RETRY_AFTER: 500 at once, nothing asked
            with pytest.raises(Unavailable):
                users.get_ha1(name, "r")
        assert fetcher.asked == [("ann", "r")]
        clock.now += RETRY_AFTER
        _pending(users, "ben")  # tried again
        await _settle()
        fetcher.answers[("ben", "r")].set_exception(LookupFailed("connection refused"))
        await _settle()
        clock.now += RETRY_AFTER
        _pending(users, "ben")
        await _settle()
        fetcher.answers[("ben", "r")].set_result(None)  # back: ben does not exist
        await _settle()
        assert not users.down and users.get_ha1("ben", "r") is None
        assert _count(users) == (1, 3, 2, 2)
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [
            "user database postgresql://u@db/x unavailable: connection refused (AUTHs of users "
            "not cached get 500 until it answers; tried again at most every 1 s)",
            "user database postgresql://u@db/x answers again",
        ]

    asyncio.run(main())


def test_a_skipped_lookup_fails_its_waiters_only_and_aclose_ends_everything_in_order() -> None:
    """LookupSkipped: the frames that waited find Unavailable, the database is not down, the
    next ask for that user tries again. aclose: the lookups in flight are cancelled and done
    before the fetcher closes, and the TickClock's timer is gone."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clock = TickClock(loop)
        fetcher = Fetcher(loop)
        users = RemoteUsers(fetcher, Ha1Cache(30.0, clock), StatsCounters(), loop, "db", clock)
        wait = _pending(users, "ann")
        found: list[str] = []

        def routed_again() -> None:
            with pytest.raises(Unavailable):
                users.get_ha1("ann", "r")
            found.append("unavailable")

        wait.pending.then(routed_again)
        await _settle()
        fetcher.answers[("ann", "r")].set_exception(LookupSkipped("queued"))
        await _settle()
        assert found == ["unavailable"] and not users.down
        assert _count(users) == (0, 1, 0, 1)
        _pending(users, "ann")  # asked again, not refused
        await _settle()
        tasks = set(users._tasks)
        closed_after: list[bool] = []

        async def aclose() -> None:
            closed_after.append(all(t.done() for t in tasks))

        fetcher.aclose = aclose  # type: ignore[method-assign]
        await users.aclose()
        assert len(tasks) == 1 and closed_after == [True]
        assert clock._handle.cancelled()

    asyncio.run(main())
