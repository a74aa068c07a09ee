"""FrameGate: frames never interleave on a connection while a streamed frame is written to it.

Rules (RFC 4975 §7.1: a frame's bytes are contiguous on the wire; issue 5): a frame relayed
in pieces (head, body pieces, end-line) may be written while another frame for the same
connection arrives, from another connection or another worker. The first piece makes its
source the owner of the connection's output; writes from other sources wait, in arrival
order, until the owner's last piece (`more=False`) is out. Per-source order is always kept.
The gate is pure bookkeeping (no I/O): `offer` returns what may be written now, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["FrameGate", "Write"]


@dataclass(frozen=True, slots=True)
class Write:
    data: bytes | memoryview
    close_after: bool
    source: Hashable
    """Who writes: the pieces of one streamed frame share it; None for a one-piece frame."""
    more: bool
    """More pieces of this frame follow."""


class FrameGate:
    __slots__ = ("held", "held_bytes", "owner")

    def __init__(self) -> None:
        self.owner: Hashable = None
        self.held: deque[Write] = deque()
        self.held_bytes = 0

    def offer(self, item: Write) -> list[Write]:
        """Queue `item`; return every write that may go out now, in order."""
        if not self.held and (self.owner is None or item.source == self.owner):
            self._take(item)  # the common case: nothing waits, nothing streams
            return [item]
        self.held.append(item)
        self.held_bytes += len(item.data)
        return self._release()

    def _take(self, item: Write) -> None:
        self.owner = item.source if item.more else None

    def _release(self) -> list[Write]:
        out: list[Write] = []
        progress = True
        while progress and self.held:
            progress = False
            keep: deque[Write] = deque()
            blocked: set[Hashable] = set()  # a source with a held item keeps its later ones
            for item in self.held:
                free = self.owner is None or item.source == self.owner
                if free and item.source not in blocked:
                    self._take(item)
                    self.held_bytes -= len(item.data)
                    out.append(item)
                    progress = True
                else:
                    blocked.add(item.source)
                    keep.append(item)
            self.held = keep
        return out

    def abandon(self, source: Hashable) -> None:
        """`source` will send no more pieces (its worker died): release the connection."""
        if self.owner == source:
            self.owner = None
