"""Token buckets of the [limits] rates (workers/ratelimit.py): sans-IO, the clock passed in."""

from __future__ import annotations

import pytest

from msrpd.workers.ratelimit import SESSION_DEBT, USER_DEBT, ReadRate, TokenBucket


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


def test_set_rate_keeps_what_the_old_rate_gave_and_caps_at_the_new_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=20.0, now=0.0)
    bucket.take(20, 0.0)
    bucket.set_rate(2.0, 4.0, 1.0)  # 10 tokens came at the old rate, capped at 4
    assert bucket.tokens == 4.0 and (bucket.rate, bucket.burst) == (2.0, 4.0)
    assert bucket.take(6, 1.0) == pytest.approx(1.0)  # 2 short at 2/s


def test_charge_takes_from_the_connection_and_its_user_and_names_the_debt() -> None:
    own, user = TokenBucket(10.0, 3.0, 0.0), TokenBucket(10.0, 2.0, 0.0)
    rate = ReadRate(own, None)
    rate.user_frames = user
    assert rate.charge(own, user, 2, 0.0) == 0
    assert rate.charge(own, user, 1, 0.0) == USER_DEBT  # the user's bucket is short first
    assert own.tokens == 0.0  # charged all the same: the frame was read
    assert rate.charge(own, None, 1, 0.0) == SESSION_DEBT
    assert rate.charge(None, None, 1, 0.0) == 0
    assert rate.debt(0.0) == pytest.approx(0.1)  # both 1 short at 10/s
