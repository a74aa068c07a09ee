"""The reader's fast path: a complete, well-formed frame read in a few C-speed passes.

Strategy: the usual frame (whole in the buffer, grammar respected, body within the limit) needs
none of the state machine in reader.py. The first bytes of the buffer are split at CRLF once;
the head is the lines before the first empty one (a body follows) or the first one starting
with "-" (a bodiless frame's end-line). Each line is checked against RFC 4975 §9 with a
translate (only utf8text bytes: no control character, so no bare CR or LF either), a few
comparisons and, for a name that is not a defined one, a partition. No regex: its character
classes cost ~40 instructions a byte, and bytes.find parses its arguments on every call.
Anything unusual returns None and the state machine reads the frame, errors included, so both
paths give the same Frame for the same bytes (tests/protocol/test_fastpath.py holds this to
the regex it replaced). Tried once per frame: byte-at-a-time input stays O(n).
"""

from __future__ import annotations

from typing import Final

from . import grammar, hnames
from .frame import Frame

__all__ = ["path_span", "read_whole_frame"]

# Bound here as Final: compiled, a name imported from another module is a dict lookup.
_DASHES: Final = grammar.DASHES
_LINE_TEXT: Final = grammar.LINE_TEXT
_IDENT_CHARS: Final = grammar.IDENT_CHARS
_TOKEN_CHARS: Final = grammar.TOKEN_CHARS
_DEFINED: Final = frozenset(hnames.CANONICAL)
_FLAG_BYTES: Final = {byte: bytes((byte,)) for byte in grammar.FLAGS}
# The first bytes looked at, and the lines cut from them: a frame whose head (or bodiless
# end-line) is not within them goes to the state machine, as does a body of many lines
# whose end-line is found by a search instead.
_PREFIX: Final = 1024
_MAX_SPLIT: Final = 12
_MAX_TID: Final = 64

# The defined header names with their colon, by first byte: most header lines are one of
# them, in canonical case, known by one comparison.
_KNOWN: Final = {
    first: tuple(name + b":" for name in hnames.OTHER_NAMES if name[0] == first)
    for first in {name[0] for name in hnames.OTHER_NAMES}
}


def read_whole_frame(buf: bytearray, max_body: int) -> Frame | None:
    """The frame at the start of `buf` if it is complete and well formed, else None.
    Consumes nothing: the caller deletes len(frame.buf) bytes."""
    size = len(buf)
    data = bytes(buf) if size <= _PREFIX else bytes(buf[:_PREFIX])
    lines = data.split(b"\r\n", _MAX_SPLIT)
    last = len(lines) - 1  # the one piece not followed by CRLF
    if last < 4:
        return None
    first = lines[0]
    sp = _space(first, 5)
    tid = first[5:sp]
    rest = first[sp + 1 :]
    if not first.startswith(b"MSRP ") or not _is_tid(tid):
        return None
    code = _status_code(rest)
    if code < 0 and (len(rest) == 0 or rest.translate(_TOKEN_CHARS) != rest):
        return None
    at = len(first) + 2
    to_span = _path(lines[1], b"To-Path:", at)
    at += len(lines[1]) + 2
    from_span = _path(lines[2], b"From-Path:", at)
    at += len(lines[2]) + 2
    if to_span is None or from_span is None:
        return None
    # The head's other lines, up to the first empty one (a body follows) or the first one
    # starting with "-" (the end-line of a bodiless frame).
    n = 3
    while n < last:
        line = lines[n]
        if len(line) == 0 or line[0] == 45:  # 45: "-"
            break
        if not _header_line(line):
            return None
        at += len(line) + 2
        n += 1
    if n == last:
        return None  # the head goes on beyond the lines cut
    # Every head byte is utf8text (no HTAB: grammar.LINE_TEXT), so no CR or LF but the
    # CRLFs the lines were cut at: one translate over the lines joined.
    joined = b"".join(lines[:n])
    if joined.translate(_LINE_TEXT) != joined:
        return None
    sep = at  # the blank line's CRLF, or the end-line's dashes (RFC 4975 §7.1)
    ending = _DASHES + tid
    if len(lines[n]) != 0:  # bodiless: this line must be the end-line
        body_start, found = -1, sep - 2
        if not lines[n].startswith(ending):
            return None
    else:
        # The end-line is the first line after the blank one that starts with "-------" tid
        # (the blank line's own CRLF may start it: an empty body).
        body_start = found = sep + 2
        k = n + 1
        while k < last and not lines[k].startswith(ending):
            found += len(lines[k]) + 2
            k += 1
        found -= 2  # the CRLF before the end-line
        if k == last:  # beyond the lines cut: search
            found = buf.find(b"\r\n" + ending, sep)
        if found < 0 or found - body_start > max_body:
            return None
    end = found + len(ending) + 5  # CRLF, dashes, tid, flag, CRLF
    if end > size:
        return None
    frame_bytes = data if end == len(data) else data[:end] if end < len(data) else bytes(buf[:end])
    # The end-line's flag and CRLF (grammar.closes_end_line).
    flag = _FLAG_BYTES.get(frame_bytes[end - 3])
    if flag is None or frame_bytes[end - 2] != 13 or frame_bytes[end - 1] != 10:
        return None
    return Frame(
        frame_bytes,
        tid,
        None if code >= 0 else rest,
        code if code >= 0 else None,
        (b"" if len(rest) == 3 else rest[4:]) if code >= 0 else None,
        sep,
        body_start,
        found + 2,  # the end-line's dashes
        flag,
        to_span,
        from_span,
    )


def _space(line: bytes, start: int) -> int:
    """Where the first SP from `start` is in `line`, or len(line). A loop: compiled, it
    costs less than bytes.find, which parses its arguments on every call."""
    size = len(line)
    while start < size and line[start] != 32:
        start += 1
    return start


def _is_tid(tid: bytes) -> bool:
    """`ident` (RFC 4975 §9), 1 to 64 characters (grammar.py says why not 4 to 32)."""
    return 0 < len(tid) <= _MAX_TID and _alnum(tid[0]) and tid.translate(_IDENT_CHARS) == tid


def _status_code(rest: bytes) -> int:
    """The status code if the first line's rest is `3DIGIT [SP comment]`, else -1 (a
    method: a third token of three digits makes a response, RFC 4975 §9)."""
    if len(rest) < 3 or (len(rest) > 3 and rest[3] != 32):
        return -1
    d0, d1, d2 = rest[0] - 48, rest[1] - 48, rest[2] - 48
    if 0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9:
        return d0 * 100 + d1 * 10 + d2
    return -1


def _path(line: bytes, name: bytes, at: int) -> tuple[int, int, int] | None:
    """The span (as path_span gives it, offsets from the frame's start, the line starting at
    `at`) of a To-Path or From-Path line, or None. The value may not be empty; the line
    holds no HTAB (checked apart), so SP is the only blank."""
    if not line.startswith(name):
        return None
    start = len(name)
    end = len(line)
    while start < end and line[start] == 32:
        start += 1
    if start == end:
        return None
    while line[end - 1] == 32:
        end -= 1
    return at + start, at + _space(line, start), at + end


def _header_line(line: bytes) -> bool:
    """Whether a header line after From-Path is `hname ":" utf8text` (its bytes are checked
    apart), naming neither path nor a defined header in other than canonical case."""
    for known in _KNOWN.get(line[0], ()):
        if line.startswith(known):
            return True
    name, colon, _ = line.partition(b":")
    # hname: ALPHA *token-char (RFC 4975 §9); a defined name in other case goes to the
    # state machine, which notes it (hnames.py); To-Path or From-Path again is an error.
    return (
        len(colon) != 0
        and len(name) != 0
        and _alpha(name[0])
        and name.translate(_TOKEN_CHARS) == name
        and name.lower() not in _DEFINED
    )


def _alnum(c: int) -> bool:
    return 48 <= c <= 57 or _alpha(c)


def _alpha(c: int) -> bool:
    return 65 <= c <= 90 or 97 <= c <= 122


def path_span(buf: bytes | bytearray, start: int, first_end: int, end: int) -> tuple[int, int, int]:
    """(start, end of first URI, end without trailing blanks) of a path header value."""
    while buf[end - 1] in b" \t":
        end -= 1
    return start, first_end, end
