"""Big bodies with as few copies as the reader can manage (issue 16).

Strategy (reader.py decides when; this module holds the searches and the copies):
- A read of a streamed body passes as the piece itself when no end-line starts inside it
  (`pass_through`); only a tail that could begin the end-line stays in the reader's buffer.
- A frame delivered whole whose bytes held reach GATHER_MIN has its further reads kept as
  they came (`Gathered`), not added to the buffer: a bytearray grown read by read is copied
  again each time it outgrows its block. The end-line is looked for in each read and across
  each read's start; once found, the frame's bytes are joined in one copy. Whatever is not
  plain (an end-line marker across two reads, one that does not close, a flag still to
  come) is left to the reader's usual search over the reads put back in its buffer.
- A frame kept apart that grows past the whole-frame limit with no end-line begun is streamed
  with its reads as they came (`drain`), not put back in the buffer, searched again and
  copied out as one piece.
- Every search over a big read is memsearch.py's (memmem).
- What leaves a bytearray is copied once (`head_bytes`), not sliced and then copied.
"""

from __future__ import annotations

from typing import Final

from .events import BodyPiece
from .frame import Frame
from .grammar import closes_end_line
from .memsearch import find
from .partial import PartialFrame, marker_tail

__all__ = ["GATHER_MIN", "Gathered", "head_bytes", "pass_through"]

GATHER_MIN: Final = 64 * 1024
"""Bytes of a frame held before its further reads are kept apart."""


def head_bytes(buf: bytearray, end: int) -> bytes:
    """buf[:end] as bytes, in one copy (a slice of a bytearray would be a second one). The
    view is gone when this returns, so the caller may resize buf."""
    if end == len(buf):
        return bytes(buf)
    with memoryview(buf) as view:
        return view[:end].tobytes()


def pass_through(data: bytes, marker: bytes, buf: bytearray) -> BodyPiece | None:
    """A streamed body's read that came with nothing held in `buf`, as a piece without a
    copy when `marker` (how its end-line starts) is not in it; a tail that could begin it
    goes to `buf` (a few bytes). None, with all of `data` in `buf`, for the usual search."""
    cut = -1 if find(data, marker) >= 0 else marker_tail(data, marker, 0)
    if cut <= 0:
        buf += data
        return None
    if cut == len(data):
        return BodyPiece(data)
    buf += data[cut:]
    return BodyPiece(data[:cut])


class Gathered:
    """A whole frame's reads after the reader's buffer, in order."""

    __slots__ = ("before", "reads", "searched", "size", "skipped")

    def __init__(self, data: bytes, buf: bytearray, marker: bytes) -> None:
        self.reads = [data]
        self.size = len(data)
        self.searched = 0  # reads[:searched] hold no marker, nor does any read's start
        self.skipped = 0  # their bytes
        self.before = bytes(buf[-len(marker) - 2 :])  # the bytes just ahead of reads[searched]

    def add(self, data: bytes) -> None:
        self.reads.append(data)
        self.size += len(data)

    def end(self, marker: bytes) -> tuple[int, int]:
        """Where the end-line starts, the reader's buffer searched already: (i, at) for
        reads[i][at:], its flag and CRLF in that read; (-1, 0) when no read holds a marker;
        (-2, 0) for anything else, left to the usual search. Each read is searched once."""
        span = len(marker) + 2
        reads = self.reads
        for i in range(self.searched, len(reads)):
            read, before = reads[i], self.before
            if (before + read[:span]).find(marker) >= 0:
                return -2, 0  # across the read's start, or a look-alike held in the buffer
            at = find(read, marker)
            if at >= 0:
                end = at + span + 1
                if end <= len(read) and closes_end_line(read, end):
                    return i, at
                return -2, 0
            self.before = read[-span:] if len(read) >= span else (before + read)[-span:]
            self.searched = i + 1
            self.skipped += len(read)
        return -1, 0

    def frame(self, buf: bytearray, partial: PartialFrame, max_body: int) -> Frame | bool:
        """The frame, if it ends plainly in a read kept here (`buf` then holds what follows
        it); True if it goes on within `max_body`; False: left to the usual search."""
        marker = partial.marker
        i, at = self.end(marker)
        before = len(buf) + self.skipped  # bytes ahead of reads[i], or of the reads' end
        if i == -1:  # all but what could begin the end-line is body
            return before - len(marker) + 1 - partial.body_start <= max_body
        if i < 0 or before + at - partial.body_start > max_body:
            return False
        end = at + len(marker) + 3
        flag = self.reads[i][end - 3 : end - 2]
        data = self.join(buf, i, end)
        # Before `buf` changes: the first line's match reads its groups from it.
        frame = partial.make_frame(data, partial.body_start, before + at + 2, flag)
        self.rest(buf, i, end)
        return frame

    def drainable(self, marker: bytes) -> bool:
        """Every read searched (`end` gave -1, so the frame is too big to come whole), and
        the last one at least as long as a tail that could begin the end-line: the reader
        streams the frame, its reads going on as they came (`drain`)."""
        return self.searched == len(self.reads) and len(self.reads[-1]) >= len(marker)

    def drain(self, buf: bytearray, body_start: int, marker: bytes) -> list[bytes]:
        """A frame found too big to come whole (`drainable`): its body so far as pieces, the
        reads as they came, and in `buf` only the tail of the last read that could begin the
        end-line."""
        reads = self.reads
        last = reads[-1]
        # No marker lies across two reads (`end` looked), so one begun before `last` would
        # have ended in it: only the tail of `last` may begin one.
        cut = marker_tail(last, marker, 0)
        with memoryview(buf) as view:
            pieces = [view[body_start:].tobytes(), *reads[:-1]]
        pieces.append(last if cut == len(last) else last[:cut])
        buf.clear()
        buf += last[cut:]
        return [piece for piece in pieces if piece]

    def flatten(self, buf: bytearray) -> None:
        """The reads, back in the buffer after what it holds (the usual search then)."""
        for read in self.reads:
            buf += read

    def join(self, buf: bytearray, i: int, end: int) -> bytes:
        """buf, the reads before reads[i] and reads[i][:end], in one copy."""
        reads = self.reads
        with memoryview(buf) as view, memoryview(reads[i]) as last:
            return b"".join((view, *reads[:i], last[:end]))

    def rest(self, buf: bytearray, i: int, end: int) -> None:
        """Put what follows reads[i][:end] in `buf`, which held what came before."""
        buf.clear()
        with memoryview(self.reads[i]) as last:
            buf += last[end:]
        for read in self.reads[i + 1 :]:
            buf += read
