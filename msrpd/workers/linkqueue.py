"""LinkQueue: what one handoff link has to write, and which messages it still answers for.

Strategy (sans-IO; link.py does the writing):
- Messages queue as pieces (header, then the caller's parts, never copied) until the link
  writes them all in one transport write: `take` joins them (one copy, measured faster than
  `writelines` under both uvloop and asyncio for payloads of 100 B to 64 KiB), unless they
  are more than JOIN_MAX: then the pieces go to `writelines` (one writev), so a big message's
  payload is not copied on its way to the kernel (issue 16).
- Failure is never silent. A FRAME or CLOSE is tracked (its end offset in the batch, conid,
  token) until the transport has passed all its bytes to the kernel; replies (GONE, PAUSE,
  RESUME, connection-moving kinds) are not. `written` keeps tracking exactly the messages
  whose bytes the transport still holds; `fail` hands back everything queued or still held
  when the link breaks, so the sender hears about each one.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["JOIN_MAX", "LinkQueue", "Tracked"]

JOIN_MAX = 64 * 1024
"""The most bytes `take` joins into one piece."""

Tracked = tuple[int, int, int]
"""A message the sender must hear about if it fails: (end offset in its batch, conid, token)."""


class LinkQueue:
    """Pieces queued for one link, and the tracked messages among them or in its transport."""

    __slots__ = ("_inflight", "_pieces", "_tracked", "queued")

    def __init__(self) -> None:
        self._pieces: list[bytes | memoryview] = []  # not yet given to the transport
        self._tracked: list[Tracked] = []  # messages among _pieces
        self.queued = 0  # bytes in _pieces
        self._inflight: list[Tracked] = []  # messages whose bytes the transport still holds

    def __bool__(self) -> bool:
        """Something waits to be written."""
        return bool(self._pieces)

    def push(
        self, header: bytes, parts: Sequence[bytes | memoryview], size: int, conid: int, token: int
    ) -> None:
        """Queue a tracked message: `header`, then `parts` of `size` bytes in all."""
        self._pieces.append(header)
        self._pieces.extend(parts)
        self.queued += len(header) + size
        self._tracked.append((self.queued, conid, token))

    def push_reply(self, message: bytes) -> None:
        """Queue a message nobody waits for an answer to (lost if the link fails)."""
        self._pieces.append(message)
        self.queued += len(message)

    def take(self) -> tuple[list[bytes | memoryview], list[Tracked]]:
        """Everything queued, for one write (one piece up to JOIN_MAX, else the pieces as
        queued: `writelines`), and the tracked messages in it."""
        data = self._pieces
        if self.queued <= JOIN_MAX:
            data = [b"".join(data)]
        tracked = self._tracked
        self._pieces, self._tracked, self.queued = [], [], 0
        return data, tracked

    def written(self, tracked: list[Tracked], size: int, left: int | None) -> None:
        """A batch of `size` bytes went to the transport, which still holds `left` bytes of it
        (None: none of it reached the kernel, as when the transport was paused or failed)."""
        if left is None:
            self._inflight.extend(tracked)
        elif left:
            cutoff = size - left
            self._inflight.extend(t for t in tracked if t[0] > cutoff)

    def drained(self) -> None:
        """The transport passed every byte to the kernel: nothing is in flight any more."""
        self._inflight.clear()

    def fail(self) -> list[Tracked]:
        """The link broke: drop everything and return the messages that did not get through,
        oldest first."""
        failed = self._inflight + self._tracked
        self._inflight, self._tracked, self._pieces, self.queued = [], [], [], 0
        return failed
