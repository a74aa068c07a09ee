"""Stateful forwarding, the sans-IO parts: transaction ids that name their owner, end-lines
under a new id, the Byte-Range a REPORT gives back.

Rules:
- A forwarded request gets a new transaction id (RFC 4976 §6.4; RFC 4975 §7.1: at least 64
  bits of randomness). Ours are 26 lower-case hex characters, all `ident` characters (RFC
  4975 §9: 4 to 32): 2 for the worker slot, 4 for its generation, then 20 random (80 bits)
  that the caller draws from the CSPRNG (nothing here reads randomness). The owner in front
  lets whichever worker reads the response hand it to the worker that keeps the transaction
  (workers/transactions.py). An id of another shape is never one of ours.
- The forwarded body must not hold `-------<newtid>` (RFC 4975 §7.1): a whole frame whose
  body does gets another id (`end_line_in_body`). A streamed body is not scanned: the new id
  is drawn after its head arrived and only the next hop ever sees it, so the sender cannot
  aim at it, and 80 random bits make a chance match negligible.
- A streamed frame's end-line arrives on its own (events.FrameEnd.raw) and is rewritten to the
  new id here (`retid_end`), its flag kept.
- A REPORT's Byte-Range gives the range-end from the bytes actually received (RFC 4975
  §7.1.2, rfc-checklist §2.5): `received_range`.
"""

from __future__ import annotations

import re

from .frame import Frame
from .grammar import DASHES, FIRST_LINE

__all__ = [
    "RANDOM_HEX",
    "TID_LENGTH",
    "end_line_in_body",
    "header_in",
    "make_tid",
    "received_range",
    "response_facts",
    "retid_end",
    "tid_owner",
    "tid_prefix",
]

RANDOM_HEX = 20
"""Random hex characters in a transaction id we make: 80 bits."""
TID_LENGTH = 6 + RANDOM_HEX
_OURS = re.compile(rb"[0-9a-f]{%d}" % TID_LENGTH)
_RANGE = re.compile(rb"([0-9]{1,18})-(?:[0-9]{1,18}|\*)/([0-9]{1,18}|\*)")


def tid_prefix(slot: int, generation: int) -> bytes:
    """What every transaction id of worker (slot, generation) starts with.

    Raises:
        ValueError: slot or generation does not fit (slot < 256, generation < 65536).
    """
    if not (0 <= slot < 1 << 8 and 0 <= generation < 1 << 16):
        raise ValueError("slot or generation out of range")
    return b"%02x%04x" % (slot, generation)


def make_tid(prefix: bytes, random_hex: str) -> bytes:
    """A new transaction id: a worker's `prefix` (tid_prefix) and RANDOM_HEX hex digits."""
    return prefix + random_hex.encode("ascii")


def tid_owner(tid: bytes) -> tuple[int, int] | None:
    """The (slot, generation) a transaction id of ours names, or None when it is not ours."""
    if len(tid) != TID_LENGTH or _OURS.fullmatch(tid) is None:
        return None
    return int(tid[:2], 16), int(tid[2:6], 16)


def end_line_in_body(frame: Frame, tid: bytes) -> bool:
    """Whether `frame`'s body holds `-------<tid>` (RFC 4975 §7.1: the sender picks another
    id; checklist §2.8). False for a bodiless or streamed frame.

    Cost matters (every forwarded SEND): a body without a dash is ruled out by one memchr;
    otherwise the 13-byte `-------` + owner prefix is looked for and each hit compared. One
    search for the whole 33-byte marker costs 20 us in 10 KiB of a repeated byte (CPython's
    two-way search), against 2 us for the prefix."""
    buf, start, end = frame.buf, frame.body_start, frame.end_start - 2  # Frame.body's bounds
    if start < 0 or end < start:  # bodiless, streamed, or empty
        return False
    if buf.find(b"-", start, end) < 0:
        return False
    marker = DASHES + tid
    prefix = marker[: len(DASHES) + 6]
    at = buf.find(prefix, start, end)
    while at >= 0:
        if at + len(marker) <= end and buf.startswith(marker, at):
            return True
        at = buf.find(prefix, at + 1, end)
    return False


def response_facts(data: bytes) -> tuple[bytes, int, bytes, bytes] | None:
    """(transaction id, code, reason, first To-Path URI) of `data`, one whole response a
    FrameReader has already accepted (another worker's: it hands the bytes on), read without
    parsing it again; None when `data` is not a response."""
    m = FIRST_LINE.match(data)
    if m is None or m[2] is None:
        return None
    start = m.end() + 2  # To-Path is the first header (the reader checked)
    line = data[start : data.find(b"\r\n", start)]
    uris = line.partition(b":")[2].split(None, 1)
    return m[1], int(m[2]), m[3] or b"", uris[0] if uris else b""


def retid_end(raw: bytes | memoryview, tid: bytes) -> bytes:
    """A streamed frame's closing bytes (CRLF, `-------`, old id, flag, CRLF: FrameEnd.raw)
    under transaction id `tid`, the flag kept."""
    return b"\r\n" + DASHES + tid + bytes(raw[-3:])


def received_range(byte_range: bytes | None, received: int) -> bytes:
    """The Byte-Range a REPORT gives for a chunk of which `received` body bytes arrived:
    range-start and total as the SEND said, range-end from what arrived (RFC 4975 §7.1.2).
    A missing or unreadable Byte-Range counts from byte 1 of an unknown total."""
    m = None if byte_range is None else _RANGE.fullmatch(byte_range)
    start, total = (1, b"*") if m is None else (int(m[1]), m[2])
    return b"%d-%d/%s" % (start, start + received - 1, total)


def header_in(head: bytes, name: bytes) -> bytes | None:
    """The value of the first header `name` (lower case, colon included: b"message-id:") in
    `head`, a frame's first line and header lines, as Frame.header gives it (any case,
    blanks trimmed), without parsing every header: a transaction keeps its request's head
    to read Message-ID and Byte-Range only if a REPORT is ever built."""
    at = head.lower().find(b"\r\n" + name)
    if at < 0:
        return None
    at += 2 + len(name)
    return head[at : head.index(b"\r\n", at)].strip(b" \t")
