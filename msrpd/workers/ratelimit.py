"""Token buckets for the [limits] rates (sans-IO: the caller passes the clock's reading).

Rules:
- A bucket holds at most `burst` tokens and gains `rate` a second. take() may go into debt:
  what a read already brought in is relayed, and the debt is how long the sender waits before
  the next read (back-pressure: nothing is dropped). allow() takes one token only if there is
  one (a connect the relay does not make).
- ReadRate: one client connection's two buckets, frames (charged per frame) and bytes
  (charged per read), and its user's two ([limits] user rates), charged alike; the
  connection waits until none is in debt. Their levels move with the connection (a move
  to another worker does not refill them: limits.py).
"""

from __future__ import annotations

from typing import Final

__all__ = ["SESSION_DEBT", "USER_DEBT", "ReadRate", "TokenBucket", "bucket", "capacity"]

SESSION_DEBT: Final = 1
USER_DEBT: Final = 2


def capacity(rate: float, burst: float) -> float:
    """What a bucket of `rate` a second holds: `burst` seconds of it, at least one token."""
    return max(1.0, rate * burst)


def bucket(rate: float, burst: float, now: float) -> TokenBucket | None:
    """A full bucket of `rate` a second holding `burst` seconds of it; None when the rate is 0
    (that limit is off)."""
    return TokenBucket(rate, capacity(rate, burst), now) if rate else None


class TokenBucket:
    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def take(self, n: float, now: float) -> float:
        """Take `n` tokens, into debt if need be; the seconds until the debt is paid (0.0
        when there is none)."""
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def level(self, now: float) -> float:
        """The tokens it holds at `now` (below 0: in debt)."""
        self._refill(now)
        return self.tokens

    def lower_to(self, tokens: float, now: float) -> None:
        """Hold no more than `tokens` at `now` (a moved connection's level: ReadRate.levels)."""
        self._refill(now)
        self.tokens = min(self.tokens, tokens)

    def set_rate(self, rate: float, burst: float, now: float) -> None:
        """A new rate from `now` on (what the old one gave until now is kept)."""
        self._refill(now)
        self.rate = rate
        self.burst = burst
        self.tokens = min(self.tokens, burst)

    def allow(self, now: float) -> bool:
        """Take one token if there is a whole one."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ReadRate:
    """One client connection's frame and byte buckets (None: that rate is off), and its user's
    (workers/userrate.py: shared by the user's connections on this worker)."""

    __slots__ = ("bytes", "frames", "user_bytes", "user_frames")

    def __init__(self, frames: TokenBucket | None, octets: TokenBucket | None) -> None:
        self.frames = frames
        self.bytes = octets
        self.user_frames: TokenBucket | None = None
        self.user_bytes: TokenBucket | None = None

    def charge(
        self, own: TokenBucket | None, user: TokenBucket | None, n: float, now: float
    ) -> int:
        """Take `n` from a connection's bucket and its user's: SESSION_DEBT, USER_DEBT (the
        user's rate comes first), or 0 when neither is in debt."""
        if user is not None and user.take(n, now) > 0:
            if own is not None:
                own.take(n, now)
            return USER_DEBT
        if own is not None and own.take(n, now) > 0:
            return SESSION_DEBT
        return 0

    def charge_read(self, size: int, now: float) -> int:
        """A read of `size` bytes, before its frames are routed: charge() on the byte buckets."""
        if self.bytes is None and self.user_bytes is None:
            return 0
        return self.charge(self.bytes, self.user_bytes, size, now)

    def charge_frame(self, now: float) -> int:
        """A frame read: charge() on the frame buckets."""
        if self.frames is None and self.user_frames is None:
            return 0
        return self.charge(self.frames, self.user_frames, 1, now)

    def levels(self, now: float) -> tuple[float | None, ...]:
        """Each bucket's tokens at `now`: frames, bytes, the user's frames and bytes (None: that
        rate is off). A connection moving to another worker carries them: the buckets made
        for it there start from them, not full, or every move would be a fresh burst."""
        return tuple(
            None if b is None else b.level(now)
            for b in (self.frames, self.bytes, self.user_frames, self.user_bytes)
        )

    def debt(self, now: float) -> float:
        """Seconds until no bucket is in debt."""
        wait = 0.0
        for bucket in (self.frames, self.bytes, self.user_frames, self.user_bytes):
            if bucket is not None:
                wait = max(wait, bucket.take(0, now))
        return wait
