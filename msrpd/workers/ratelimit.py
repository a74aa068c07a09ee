"""Token buckets for the [limits] rates (sans-IO: the caller passes the clock's reading).

Rules:
- A bucket holds at most `burst` tokens and gains `rate` a second. take() may go into debt:
  what a read already brought in is relayed, and the debt is how long the sender waits before
  the next read (back-pressure: nothing is dropped). allow() takes one token only if there is
  one (a connect the relay does not make).
- ReadRate: one client connection's two buckets, frames (charged per frame) and bytes
  (charged per read); the connection waits until neither is in debt.
"""

from __future__ import annotations

__all__ = ["ReadRate", "TokenBucket"]


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

    def allow(self, now: float) -> bool:
        """Take one token if there is a whole one."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ReadRate:
    """One client connection's frame and byte buckets (None: that rate is off)."""

    __slots__ = ("bytes", "frames")

    def __init__(self, frames: TokenBucket | None, octets: TokenBucket | None) -> None:
        self.frames = frames
        self.bytes = octets

    def debt(self, now: float) -> float:
        """Seconds until neither bucket is in debt."""
        return max(
            (b.take(0, now) for b in (self.frames, self.bytes) if b is not None), default=0.0
        )
