"""Rewriting a received frame for its next hop: the relay splice and its kin.

Rules:
- `relay_splice` is Kamailio's msrp_relay rewrite (reference §6.2, RFC 4976 §6.2): the first
  To-Path URI moves to the front of From-Path; every other byte, the header order and the body
  stay as received. It cuts at the parsed value offsets, so `From-Path:<uri>` (no space) keeps
  every character (Kamailio drops one). A defined header name not in canonical case is
  written in it (canonical_buf; rfc-checklist §6 case 8a); extension headers stay as spelled.
- A big frame is relayed as its new head and a view of the rest (relay_pieces, Spliced): its
  body is never copied again (issue 16).
"""

from __future__ import annotations

from typing import Final

from .errors import LocalProtocolError
from .frame import Frame
from .grammar import DASHES, UTF8TEXT
from .hnames import canonical_head

__all__ = [
    "PIECES_MIN",
    "Spliced",
    "canonical_buf",
    "forward_paths",
    "relay_pieces",
    "relay_splice",
    "retarget",
]

_SLICE_MAX: Final = 4096
"""Frames up to this size are relayed from slices of their bytes, larger ones from views."""
PIECES_MIN: Final = 64 * 1024
"""Frames from this size on are relayed as their new head and a view of the rest (Spliced):
copying them whole again would cost more than a second piece to write (issue 16)."""


def relay_splice(frame: Frame, tid: bytes | None = None) -> bytes:
    """The frame as the next hop must receive it: the first To-Path URI moved to the front of
    From-Path (RFC 4976 §6.2). For a streamed frame only the head is rewritten; the body
    pieces follow unchanged. With `tid`, the transaction id of the first line and of the
    end-line becomes `tid` (a forwarded request's new id, RFC 4976 §6.4; a response mapped
    back to the original id, §6.4.3); a streamed frame's end-line comes later (transact.py).

    Raises:
        LocalProtocolError: To-Path holds a single URI, so there is no next hop (status 481
            would be wrong: the caller decides; Kamailio logs and sends nothing).
    """
    buf = canonical_buf(frame)
    to_start, first_end, rest, from_start = _rotation(frame, buf)
    if tid is None and len(buf) <= _SLICE_MAX:
        # A small frame: slices of bytes are native, and copying a few hundred bytes costs
        # less than the views (generic calls) that spare a large one the copy.
        return b"".join(
            (buf[:to_start], buf[rest:from_start], buf[to_start:first_end], b" ", buf[from_start:])
        )
    view = memoryview(buf)
    if tid is None:
        return b"".join(
            (
                view[:to_start],
                view[rest:from_start],
                view[to_start:first_end],
                b" ",
                view[from_start:],
            )
        )
    parts: list[bytes | memoryview] = [b"MSRP ", tid, view[5 + len(frame.tid) : to_start]]
    parts.append(view[rest:from_start])
    parts += (view[to_start:first_end], b" ")
    end = frame.end_start
    if end < 0:
        parts.append(view[from_start:])
    else:  # "-------" old-tid flag CRLF: the flag and CRLF are kept
        parts += (view[from_start:end], DASHES, tid, view[end + 7 + len(frame.tid) :])
    return b"".join(parts)


def _rotation(frame: Frame, buf: bytes) -> tuple[int, int, int, int]:
    """Where the splice cuts `buf` (`frame`'s bytes): the first To-Path URI's start and end,
    where the To-Path URIs after it start, where From-Path's value starts.

    Raises:
        LocalProtocolError: To-Path holds a single URI.
    """
    to_start, first_end, to_end = frame.to_span
    if first_end == to_end:
        raise LocalProtocolError("To-Path has only one URI: no next hop")
    rest = first_end + 1
    while buf[rest] == 32 or buf[rest] == 9:  # SP, HTAB: compared, not a global looked up
        rest += 1
    return to_start, first_end, rest, frame.from_span[0]


class Spliced:
    """A big frame as relay_splice would give it, in two pieces: the rewritten head (first
    line and headers: the only bytes the splice changes), then the rest of the frame's own
    bytes (blank line, body, end-line) as a view, not copied (issue 16). The view keeps
    the frame's bytes, which never change, alive for as long as it is held."""

    __slots__ = ("head", "rest")

    def __init__(self, head: bytes, rest: memoryview) -> None:
        self.head = head
        self.rest = rest

    def __len__(self) -> int:
        return len(self.head) + len(self.rest)

    def joined(self) -> bytes:
        """The frame in one piece: relay_splice's bytes."""
        return b"".join((self.head, self.rest))


def relay_pieces(frame: Frame) -> bytes | Spliced:
    """relay_splice(frame), a frame of PIECES_MIN bytes or more (with a body, delivered
    whole) as a Spliced: its bytes are the same, in two pieces.

    Raises:
        LocalProtocolError: as relay_splice.
    """
    buf = frame.buf
    cut = frame.body_start
    if len(buf) < PIECES_MIN or frame.end_start < 0 or cut <= frame.from_span[0]:
        return relay_splice(frame)
    buf = canonical_buf(frame)
    to_start, first_end, rest, from_start = _rotation(frame, buf)
    head = b"".join(
        (buf[:to_start], buf[rest:from_start], buf[to_start:first_end], b" ", buf[from_start:cut])
    )
    return Spliced(head, memoryview(buf)[cut:])


def retarget(
    frame: Frame, first: bytes, tid: bytes | None = None, sender: bytes | None = None
) -> bytes:
    """The frame with its leftmost To-Path URI replaced by `first`, every other URI kept:
    what a node sends to the node that holds the session named there (README "Running a
    cluster"; that node handles it as a frame for its own token). With `tid`, the transaction
    id of the first line and of the end-line becomes `tid`, as relay_splice() does. With
    `sender`, the leftmost From-Path URI becomes `sender`: that node's answer as the sender
    must see it, from the URI it addressed."""
    buf = canonical_buf(frame)
    to_start, first_end, _ = frame.to_span
    view = memoryview(buf)
    parts: list[bytes | memoryview]
    if tid is None:
        parts = [view[:to_start], first]
    else:
        parts = [b"MSRP ", tid, view[5 + len(frame.tid) : to_start], first]
    at = first_end
    if sender is not None:  # From-Path follows To-Path (RFC 4975 §7.1)
        from_start, from_first_end, _ = frame.from_span
        parts += (view[at:from_start], sender)
        at = from_first_end
    end = frame.end_start
    if tid is None or end < 0:
        parts.append(view[at:])
    else:  # "-------" old-tid flag CRLF: the flag and CRLF are kept
        parts += (view[at:end], DASHES, tid, view[end + 7 + len(frame.tid) :])
    return b"".join(parts)


def canonical_buf(frame: Frame) -> bytes:
    """`frame.buf`, or, when a defined header name in it is not in canonical case (rare:
    the reader says so), a copy with every such name canonical: the relay emits the
    canonical case (RFC 4234 §2.3, rfc-checklist §1.6). The length and offsets are kept."""
    if not frame.odd_names:
        return frame.buf
    return canonical_head(frame.buf, frame.hdr_start, frame.hdr_end) + frame.buf[frame.hdr_end :]


def forward_paths(frame: Frame, to_path: str | None, from_path: str | None) -> bytes:
    """Kamailio 6.0's msrp_forward: the frame with its To-Path and From-Path values replaced,
    no rotation; From-Path defaults to the frame's To-Path. Every other byte is kept.

    Raises:
        LocalProtocolError: a new path is empty or holds characters a header line cannot.
    """
    old_to = frame.to_path_raw
    new_to = to_path.encode() if to_path is not None else old_to
    new_from = from_path.encode() if from_path is not None else old_to
    for value in (new_to, new_from):
        if not value.strip() or not UTF8TEXT.fullmatch(value):
            raise LocalProtocolError("a forwarded path must be one line of URIs")
    view = memoryview(canonical_buf(frame))
    (to_start, _, to_end), (from_start, _, from_end) = frame.to_span, frame.from_span
    return b"".join((view[:to_start], new_to, view[to_end:from_start], new_from, view[from_end:]))
