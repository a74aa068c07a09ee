"""The answers a worker keeps from a remote user store (users/cache.py), on a moved clock."""

from __future__ import annotations

from msrpd.users.cache import ABSENT, Ha1Cache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_lives_for_the_ttl_and_not_a_moment_longer() -> None:
    clock = Clock()
    cache = Ha1Cache(30.0, clock)
    assert cache.get(("alice", "r")) is ABSENT
    cache.put(("alice", "r"), "a" * 32)
    clock.now += 29.999
    assert cache.get(("alice", "r")) == "a" * 32
    clock.now += 0.001  # 30 s after it came
    assert cache.get(("alice", "r")) is ABSENT
    assert len(cache) == 0  # an expired answer is dropped when found


def test_no_such_user_is_kept_too_and_differs_from_absent() -> None:
    clock = Clock()
    cache = Ha1Cache(5.0, clock)
    cache.put(("mallory", "r"), None)
    assert cache.get(("mallory", "r")) is None
    assert cache.get(("mallory", "other realm")) is ABSENT
    clock.now += 5.0
    assert cache.get(("mallory", "r")) is ABSENT


def test_a_new_answer_replaces_the_old_and_restarts_its_ttl() -> None:
    clock = Clock()
    cache = Ha1Cache(10.0, clock)
    cache.put(("bob", "r"), "old")
    clock.now += 8.0
    cache.put(("bob", "r"), "new")
    clock.now += 8.0  # 16 s after the first, 8 after the second
    assert cache.get(("bob", "r")) == "new"


def test_the_clock_standing_still_keeps_an_answer_that_is_due() -> None:
    """Within one callback the worker's clock stands still (remote.TickClock): a route asking
    twice for one frame gets the same answer even at the edge of the TTL."""
    clock = Clock()
    cache = Ha1Cache(1.0, clock)
    cache.put(("carol", "r"), "h")
    clock.now += 0.999
    assert cache.get(("carol", "r")) == "h" and cache.get(("carol", "r")) == "h"


def test_made_up_names_cannot_grow_it_past_its_capacity() -> None:
    clock = Clock()
    cache = Ha1Cache(30.0, clock, capacity=3)
    for i in range(5):
        cache.put((f"u{i}", "r"), None)
        clock.now += 1
    assert len(cache) == 3
    # The oldest went first (they would have expired first too).
    assert [cache.get((f"u{i}", "r")) is ABSENT for i in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]
