"""Interrupting a streamed chunk for the frames that wait behind it (RFC 4975 §7.1, §7.1.1;
rfc-checklist §6 case 29).

Rules: while a chunk is streamed to a connection, what else is written to it (a response, a
REPORT, another sender's frame) waits in the gate (gate.py), for as long as the chunk takes.
So when a frame waits and the chunk's next body piece comes, the chunk is cut before it:
its end-line with the `+` flag, then what waited, then a new chunk with the rest: the same
head (Message-ID, paths, every header) under a new transaction id, Byte-Range start = the
next byte, range-end as the chunk said (protocol/rechunk.py). Only a SEND chunk with a
Byte-Range that is one of the relay's transactions (the relay route: the new chunk becomes
a transaction of the same sender, txchunks.py, through the connection's `chunk_ids`), and
only once MIN_CUT of its body is out, so two streams to one connection take turns in chunks
of a useful size. Nothing of this runs unless a frame waits behind a stream.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..protocol.rechunk import continuation
from .gate import FrameGate, Write
from .reports import RELAYED_HEAD_MAX
from .sentlog import SentLog

__all__ = ["MIN_CUT", "interrupt"]

MIN_CUT = 64 * 1024
"""Body bytes a chunk has written before it is cut for what waits behind it."""


def interrupt(gate: FrameGate, log: SentLog, bytes_out: int, source: Hashable) -> list[Write]:
    """Cut `source`'s chunk (it owns the output, frames wait behind it) when it may be: the
    writes that go out now, in order (gate.cut); [] when it stays whole. `bytes_out` is the
    connection's output offset (its first piece's is in the sent log)."""
    first, tid = log.streams.get(source), gate.open.get(source)
    if first is None or not tid or gate.chunk_ids is None:
        return []
    piece, at = first
    head = bytes(piece[:RELAYED_HEAD_MAX])
    end = head.find(b"\r\n\r\n") + 4
    written = bytes_out - at - end
    if end < 4 or written < MIN_CUT:
        return []
    template = continuation(head[:end], star=False)
    if template is None:
        return []
    new = gate.chunk_ids(tid, written)
    if new is None:
        return []
    template.offset += written
    return gate.cut(source, template.head(new))
