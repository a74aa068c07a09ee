"""FrameGate: frames never interleave on a connection while a streamed frame is written to it.

Rules (RFC 4975 §7.1: a frame's bytes are contiguous on the wire; issue 5): a frame relayed
in pieces (head, body pieces, end-line) may be written while another frame for the same
connection arrives, from another connection or another worker. The first piece makes its
source the owner of the connection's output; writes from other sources wait, in arrival
order, until the owner's last piece (`more=False`) is out. Per-source order is always kept.
The gate is pure bookkeeping (no I/O): `offer` returns what may be written now, in order.
A source that dies in the middle of a streamed frame (its worker was killed) is `abandon`ed:
the frame is ended with the `#` flag (RFC 4975 §7.1: the message is aborted, no more of it
follows), so the connection's framing stays whole and the frames waiting behind it go out.
A streamed SEND chunk may instead be `cut` while frames wait behind it (RFC 4975 §7.1.1,
checklist case 29; the outbox decides when): it ends there with the `+` flag, what waited
goes, and its source goes on under the head of a new chunk (protocol/rechunk.py); its own
end-line, when it comes, is renamed to that chunk's transaction id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from ..protocol.grammar import DASHES
from .transports.base import ChunkIds

__all__ = ["FrameGate", "Write"]


@dataclass(frozen=True, slots=True)
class Write:
    data: bytes | memoryview
    close_after: bool
    source: Hashable
    """Who writes: the pieces of one streamed frame share it; None for a one-piece frame."""
    more: bool
    """More pieces of this frame follow."""


def _tid(head: bytes | memoryview) -> bytes:
    """The transaction id of a frame's first piece ("MSRP <tid> ..."); b"" if none."""
    first = bytes(head[:80]).split(b" ", 2)
    return first[1] if len(first) == 3 and first[0] == b"MSRP" else b""


class FrameGate:
    __slots__ = ("chunk_ids", "held", "held_bytes", "open", "owner", "renamed")

    def __init__(self, chunk_ids: ChunkIds | None = None) -> None:
        self.chunk_ids = chunk_ids
        """The id of the chunk that goes on after a cut (the connection's, interrupt.py)."""
        self.owner: Hashable = None
        self.held: deque[Write] = deque()
        self.held_bytes = 0
        self.open: dict[Hashable, bytes] = {}
        """Source -> tid of its streamed frame offered so far but not ended."""
        self.renamed: set[Hashable] = set()
        """Sources whose streamed chunk was cut: their end-line names the first chunk's id,
        and goes out under the id in `open`."""

    def offer(self, item: Write) -> list[Write]:
        """Queue `item`; return every write that may go out now, in order."""
        if item.more:
            if item.source not in self.open:
                self.open[item.source] = _tid(item.data)  # a streamed frame's head
        elif self.open:
            tid = self.open.pop(item.source, None)
            if self.renamed and item.source in self.renamed and tid:
                self.renamed.discard(item.source)
                end = DASHES + tid + bytes(item.data[-3:])  # the flag and CRLF kept
                item = Write(b"\r\n" + end, item.close_after, item.source, False)
        if not self.held and (self.owner is None or item.source == self.owner):
            self._take(item)  # the common case: nothing waits, nothing streams
            return [item]
        self.held.append(item)
        self.held_bytes += len(item.data)
        return self._release()

    def cut(self, source: Hashable, head: bytes) -> list[Write]:
        """End `source`'s streamed chunk (it owns the output) now with "+" and go on under
        `head`, a new chunk's head; return every write that may go out now, in order: the
        end-line, what waited, the new head (unless a streamed frame that waited owns the
        output now: then the new head waits behind it)."""
        self.renamed.discard(source)  # this end-line is under the current id already
        end = b"\r\n" + DASHES + self.open[source] + b"+\r\n"
        out = self.offer(Write(end, False, source, False))
        out += self.offer(Write(head, False, source, True))
        self.renamed.add(source)
        return out

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

    def abandon(self, source: Hashable) -> list[Write]:
        """`source` will send no more pieces (its worker died): end its streamed frame with
        the `#` flag, behind what it sent; return every write that may go out now."""
        tid = self.open.get(source)
        if tid is None:
            return []
        if not tid:  # not an MSRP head (never from the relay): release, nothing to end
            del self.open[source]
            if self.owner == source:
                self.owner = None
            return self._release()
        return self.offer(Write(b"\r\n" + DASHES + tid + b"#\r\n", False, source, False))
