"""FlowControl: a connection that relays into a congested one stops reading until it drains.

Rules (uvicorn's flow_control.py, per destination): memory per connection stays bounded
(issue 5) because a source never gets further ahead of its destination than the destination's
write high-water mark plus one read. When a write leaves a destination congested (its
transport paused writing, or frames wait behind a streamed one), the connection whose data
is being routed right now (the current source) pauses reading and is remembered; when the
destination drains or closes, its blocked sources resume. A source blocked by several
destinations resumes when the last one lets it go.
Across workers the same holds in two steps: frames that arrive over a handoff link have that
link as their source, so a congested destination pauses reading the link (the sending worker
then sees its link back up); and a sender whose link holds more than WRITE_HIGH pauses the
connection it is relaying from until the link drains (HandoffSink, links.when_drained).
Pausing a link holds up every frame from that worker to this one: bounded memory comes first.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .conn import MsrpConnection
    from .context import WorkerContext

__all__ = ["WRITE_HIGH", "Blockable", "FlowControl"]


class Blockable(Protocol):
    """A reader that can be paused: a connection, or a handoff link."""

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...


WRITE_HIGH = 1 << 20
"""Bytes a connection may have waiting to be written before its sources pause (1 MiB)."""


class FlowControl:
    """One per destination connection: the sources it has paused."""

    __slots__ = ("blocked", "ctx")

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.blocked: set[Blockable] = set()

    def check(self, dest: MsrpConnection) -> None:
        """After a write to `dest` (or when it drains): pause or resume sources."""
        if dest.congested:
            source = self.ctx.current_source
            if source is not None and source is not dest and source not in self.blocked:
                self.blocked.add(source)
                source.block(dest)
        elif self.blocked:
            self.release_all(dest)

    def release_all(self, dest: MsrpConnection) -> None:
        blocked, self.blocked = self.blocked, set()
        for source in blocked:
            source.unblock(dest)
