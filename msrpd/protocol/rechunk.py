"""Continuation chunks: the head of the chunk that carries on a SEND the relay interrupted
(RFC 4975 §7.1, §7.1.1), sans-IO.

Rules: a SEND chunk with a Byte-Range may be interrupted (its end-line gets the `+` flag)
and the rest of its body sent in a new chunk: the same head (paths, Message-ID, every other
header) under a new transaction id, with Byte-Range start = the next byte. The range-end is
`*` (the chunk may be interrupted again, checklist case 28) or as the interrupted chunk
said; the total is kept. One builder for the WebSocket re-chunking (workers/transports/
wsout.py) and the interruption of a chunk when a frame waits behind it (workers/gate.py), and
for the Byte-Range a continuation's transaction reports (workers/txrelay.py).
"""

from __future__ import annotations

import re

__all__ = ["Continuation", "continuation"]

_RANGE = re.compile(rb"\r\nByte-Range:[ \t]*([0-9]+)-([0-9]+|\*)/([0-9]+|\*)\r\n", re.I)


class Continuation:
    """A SEND head with its transaction id and Byte-Range start left open."""

    __slots__ = ("after", "between", "offset")

    def __init__(self, between: bytes, after: bytes, offset: int) -> None:
        self.between = between
        self.after = after
        self.offset = offset
        """The Byte-Range position of the next body byte (RFC 4975 §7.1.1, 1-based)."""

    def head(self, tid: bytes) -> bytes:
        """The head of a chunk starting at `offset`, under transaction id `tid`."""
        return b"MSRP " + tid + self.between + b"%d" % self.offset + self.after


def continuation(head: bytes, star: bool = True) -> Continuation | None:
    """`head` (a SEND's first line and header lines, as much as is there) as a Continuation
    whose offset is the head's own range-start; None when it is not a SEND with a Byte-Range.
    `star`: range-end `*`, else the head's own."""
    eol = head.find(b"\r\n")
    first = head[:eol].split(b" ", 2)
    if eol < 0 or len(first) != 3 or first[0] != b"MSRP" or first[2] != b"SEND":
        return None
    found = _RANGE.search(head, eol)
    if found is None:
        return None
    start = 5 + len(first[1])  # after "MSRP " and the transaction id
    end = b"*" if star else found[2]
    after = b"-" + end + b"/" + found[3] + head[found.end(3) :]
    return Continuation(head[start : found.start(1)], after, int(found[1]))
