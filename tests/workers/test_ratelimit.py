"""Token buckets of the [limits] rates (workers/ratelimit.py): sans-IO, the clock passed in."""

from __future__ import annotations

import pytest

from msrpd.workers.ratelimit import ReadRate, TokenBucket


def test_a_full_bucket_gives_its_burst_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=4.0, burst=5.0, now=100.0)
    assert [bucket.allow(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.allow(100.125)  # half a token
    assert bucket.allow(100.25)  # one whole token after 0.25 s at 4/s
    assert not bucket.allow(100.25)
    assert [bucket.allow(200.0) for _ in range(6)] == [True] * 5 + [False]  # capped at burst


def test_take_goes_into_debt_and_says_how_long_it_lasts() -> None:
    bucket = TokenBucket(rate=50.0, burst=10.0, now=0.0)
    assert bucket.take(10, 0.0) == 0.0  # exactly the burst: no debt
    assert bucket.take(5, 0.0) == pytest.approx(0.1)  # 5 tokens short at 50/s
    assert bucket.take(0, 0.05) == pytest.approx(0.05)  # half repaid
    assert bucket.take(0, 0.1) == 0.0
    assert not bucket.allow(0.1)  # back at zero, not at a whole token


def test_a_clock_that_goes_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, now=10.0)
    assert bucket.allow(10.0)
    assert not bucket.allow(5.0)
    assert not bucket.allow(10.5)
    assert bucket.allow(11.0)


def test_a_read_rate_waits_for_the_slower_of_its_buckets() -> None:
    rate = ReadRate(TokenBucket(10.0, 10.0, 0.0), TokenBucket(1000.0, 1000.0, 0.0))
    assert rate.debt(0.0) == 0.0
    assert rate.frames is not None and rate.bytes is not None
    rate.frames.take(12, 0.0)  # 0.2 s of debt
    rate.bytes.take(1500, 0.0)  # 0.5 s of debt
    assert rate.debt(0.0) == pytest.approx(0.5)
    assert rate.debt(0.3) == pytest.approx(0.2)
    assert rate.debt(0.5) == 0.0
    only_frames = ReadRate(TokenBucket(10.0, 1.0, 0.0), None)
    assert only_frames.frames is not None
    only_frames.frames.take(2, 0.0)
    assert only_frames.debt(0.0) == pytest.approx(0.1)
