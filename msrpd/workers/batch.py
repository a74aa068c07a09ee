"""WriteBatch: one transport write per connection per read (DESIGN §3, issue 7).

Rules: what one read produces (its replies, the frames it relays, what a handoff batch
brings) is queued in its connections' outboxes (outbox.py), and each dirty outbox is flushed
once, when that read's work ends (flush_now), or, for writes outside a read, at the end of the loop
iteration. The handoff links batch the same way (links.py): the read brackets them too.
"""

from __future__ import annotations

import asyncio

from .links import HandoffHub
from .outbox import Flusher, Outbox

__all__ = ["WriteBatch"]


class WriteBatch(Flusher):
    __slots__ = ("batching", "dirty", "links", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, links: HandoffHub | None) -> None:
        self.loop = loop
        self.links = links
        """The handoff hub's side of the batch: the class, so each read's two calls are native."""
        self.dirty: list[Outbox] = []  # concrete: a native call each, not a generic one
        self.batching = False
        """Inside one read's work (begin .. flush_now)."""

    def queue(self, out: Outbox) -> None:
        """Flush `out` when this read's work ends (flush_now) or, outside a read, at the end
        of this loop iteration."""
        self.dirty.append(out)
        if len(self.dirty) == 1 and not self.batching:
            self.loop.call_soon(self.flush_dirty)

    def flush_dirty(self) -> None:
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, []
        # Last written, first flushed: a read's frames go to the far end before the 200s to
        # the sender (the route answers, then relays), so the relayed frame waits for no
        # other write (latency, issue 7). Order within one connection is untouched.
        for out in reversed(dirty):
            out.flush()

    def begin(self) -> None:
        """One read's work starts: writes queue until flush_now, with no loop callback
        scheduled for them (flush_now must follow, in a finally)."""
        self.batching = True
        if self.links is not None:
            self.links.batching = True

    def flush_now(self) -> None:
        """The end of one read's work: write what it produced now, not at the end of the
        iteration after every other ready socket's work (latency, issue 7); one read's
        frames still leave in one write per destination."""
        self.batching = False
        self.flush_dirty()
        if self.links is not None:
            self.links.flush()
