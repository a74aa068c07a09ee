"""The reader's fast path: a complete, well-formed frame read in one pass over its head.

Strategy: the usual frame (whole in a read or the buffer, grammar respected, body within the
limit) needs none of the state machine in reader.py. A read that came with nothing held is
walked as it came (read_frame_bytes): a read that is exactly one frame becomes its bytes, with
no copy. The head is walked once, byte by byte, from the first
line to the first empty line (a body follows) or the first line starting with "-" (a bodiless
frame's end-line): each line is checked against RFC 4975 §9 as it is walked (only utf8text
bytes: no control character, so no bare CR or LF either, and no HTAB), its end found by the
same loop, and nothing is cut out of it but the frame's own fields. Compiled, with native
(i64) offsets, a byte costs ~15 instructions and the head no object: splitting it into lines,
translating and joining them cost more than the walk (issue 16). The body's end-line is one
bytes.find. No regex: its character classes cost ~40 instructions a byte. A session's frames
repeat their To-Path and From-Path lines: the last ones a connection's frames passed with are
remembered (PathMemo), and the same lines again cost one comparison. Anything unusual
returns None and the state machine reads the frame, errors included, so both paths give the
same Frame for the same bytes (tests/protocol/test_fastpath.py holds this to the regex path,
fastregex.py). Tried once per frame: byte-at-a-time input stays O(n).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from . import grammar, hnames
from .frame import Frame

if TYPE_CHECKING:
    from mypy_extensions import i64  # compiled, a native int; interpreted, never looked up

__all__ = ["PathMemo", "path_span", "read_frame_bytes", "read_whole_frame"]

# Bound here as Final: compiled, a name imported from another module is a dict lookup.
_DASHES: Final = grammar.DASHES
_MARK: Final = b"\r\n" + grammar.DASHES  # what starts the CRLF before an end-line
_DEFINED: Final = frozenset(hnames.CANONICAL)
_FLAG_BYTES: Final = {byte: bytes((byte,)) for byte in grammar.FLAGS}
# The first bytes walked: a frame whose head (or bodiless end-line) is not within them goes
# to the state machine. From a bytearray, a copy of them is walked (a bytearray is not
# indexed natively).
_PREFIX: Final = 1024
_MAX_TID: Final = 64
_SCAN_MAX: Final = 1024
"""Bytes after a head that _end_line scans itself for the end-line; beyond, bytes.find."""
# The usual methods, as the Frame's method: made once, their hash too (_method).
_SEND: Final = b"SEND"
_REPORT: Final = b"REPORT"
_AUTH: Final = b"AUTH"

# Byte classes (RFC 4975 §9), one table lookup a byte: token (methods, header names after
# their first letter), ident (transact-id), ALPHA (a header name's first letter), ALPHA / DIGIT
# (a transact-id's first character).
_TOKEN: Final = 1
_IDENT: Final = 2
_ALPHA: Final = 4
_ALNUM: Final = 8


def _classes() -> bytes:
    def kept(table: bytes, byte: int) -> bool:  # grammar's translate tables keep their bytes
        return table[byte] == byte

    out = bytearray(256)
    for byte in range(256):
        alpha = 65 <= byte <= 90 or 97 <= byte <= 122
        out[byte] = (
            (_TOKEN if kept(grammar.TOKEN_CHARS, byte) else 0)
            | (_IDENT if kept(grammar.IDENT_CHARS, byte) else 0)
            | (_ALPHA if alpha else 0)
            | (_ALNUM if alpha or 48 <= byte <= 57 else 0)
        )
    return bytes(out)


_CLASS: Final = _classes()

# The defined header names with their colon, by first byte (a tuple indexed by the byte: a
# dict would box and hash it): most header lines are one of them, in canonical case, known by
# one comparison.
_KNOWN: Final = tuple(
    tuple(name + b":" for name in hnames.OTHER_NAMES if name[0] == first) for first in range(256)
)


class PathMemo:
    """The To-Path and From-Path lines (RFC 4975 §7.1) of the last frame the fast path read
    on a connection, as it walked them: a session's frames repeat them, so the next frame's
    cost one comparison, not a walk. The reader forgets them when their URIs do not parse
    (uri.PathCheck), so lines found here are good ones: `hit` says the last frame's were."""

    __slots__ = ("at", "block", "from_span", "hit", "to_count", "to_span")

    def __init__(self) -> None:
        self.block = b""  # the two lines, CRLFs included; b"": nothing remembered
        self.at = 0  # where they started in their frame, and the spans there
        self.to_span = (0, 0, 0)
        self.from_span = (0, 0, 0)
        self.to_count = 0
        """Their To-Path URIs (Frame.to_count: asked of every frame, a walk of its bytes)."""
        self.hit = False

    def forget(self) -> None:
        self.block = b""


def read_whole_frame(buf: bytearray, max_body: int, memo: PathMemo | None = None) -> Frame | None:
    """The frame at the start of `buf` if it is complete and well formed, else None.
    Consumes nothing: the caller deletes len(frame.buf) bytes. `memo`: the connection's."""
    if len(buf) <= _PREFIX:
        return _read(bytes(buf), None, max_body, memo)
    return _read(bytes(buf[:_PREFIX]), buf, max_body, memo)


def read_frame_bytes(data: bytes, max_body: int, memo: PathMemo | None = None) -> Frame | None:
    """read_whole_frame for bytes as they were read: nothing copied before the frame is
    known whole, and a read that is exactly one frame becomes its Frame's bytes as it is."""
    return _read(data, None, max_body, memo)


def _read(
    data: bytes, held: bytearray | None, max_body: int, memo: PathMemo | None
) -> Frame | None:
    """The frame at the start of `data`, the bytes from its start: all of them, or the first
    _PREFIX of those `held`."""
    n: i64 = min(len(data), _PREFIX)  # walked: a longer head is the state machine's
    # First line: "MSRP" SP transact-id SP (method / 3DIGIT [SP comment]) CRLF.
    if not data.startswith(b"MSRP "):
        return None
    sp = _run(data, 5, n, _IDENT)
    if sp == 5 or sp - 5 > _MAX_TID or sp == n or data[sp] != 32 or not _CLASS[data[5]] & _ALNUM:
        return None
    start = sp + 1
    first_end = _line_end(data, start, n)
    if first_end < 0:
        return None
    code = _status_code(data, start, first_end)
    rest = first_end - start
    if code < 0 and (rest == 0 or _run(data, start, first_end, _TOKEN) != first_end):
        return None
    # To-Path, then From-Path (RFC 4975 §7.1), then any other header lines, up to the first
    # empty line (a body follows) or the first one starting with "-" (a bodiless end-line).
    lines = first_end + 2
    hit = memo is not None and _remembered(memo, data, lines, n)
    if memo is not None and hit:
        sep = lines + len(memo.block)
        to_span, from_span = memo.to_span, memo.from_span
        if memo.at != lines:  # the same lines after a first line of another length
            to_span, from_span = (
                _shift(to_span, lines - memo.at),
                _shift(from_span, lines - memo.at),
            )
    else:
        to_start, to_first, to_end, to_cr = _path(data, lines, n, b"To-Path:")
        if to_cr < 0:
            return None
        from_start, from_first, from_end, from_cr = _path(data, to_cr + 2, n, b"From-Path:")
        if from_cr < 0:
            return None
        sep = from_cr + 2
        to_span, from_span = (to_start, to_first, to_end), (from_start, from_first, from_end)
    paths_end = sep
    while sep < n and data[sep] != 13 and data[sep] != 45:  # CR, "-"
        sep = _header_line(data, sep, n)
        if sep < 0:
            return None
    # sep: the blank line's CRLF, or the end-line's dashes (RFC 4975 §7.1).
    tid = data[5:sp]
    body_start, end_start, end = _ends(data, held, n, sep, tid, max_body)
    if end < 0:
        return None
    total: i64 = len(data)
    if end == total:
        frame_bytes = data
    elif end < total or held is None:
        frame_bytes = data[:end]
    else:
        frame_bytes = bytes(held[:end])
    # The end-line's flag and CRLF (grammar.closes_end_line).
    flag = _FLAG_BYTES.get(frame_bytes[end - 3])
    if flag is None or frame_bytes[end - 2] != 13 or frame_bytes[end - 1] != 10:
        return None
    if memo is not None:
        memo.hit = hit
        if not hit:
            memo.block, memo.at = data[lines:paths_end], lines
            memo.to_span, memo.from_span = to_span, from_span
    frame = Frame(
        frame_bytes,
        tid,
        None if code >= 0 else _method(data, start, first_end),
        code if code >= 0 else None,
        (b"" if rest == 3 else data[start + 4 : first_end]) if code >= 0 else None,
        sep,
        body_start,
        end_start,
        flag,
        to_span,
        from_span,
        memo.to_count if memo is not None and hit else 0,
    )
    if memo is not None and not hit:
        memo.to_count = frame.to_count  # counted once for the lines a session repeats
    return frame


def _method(data: bytes, start: i64, end: i64) -> bytes:
    """The method name at data[start:end]: SEND, REPORT and AUTH as the constants (no copy,
    and a hash made once: routes look them up on every frame)."""
    size = end - start
    if size == 4 and _starts(data, start, _SEND, end):
        return _SEND
    if size == 6 and _starts(data, start, _REPORT, end):
        return _REPORT
    if size == 4 and _starts(data, start, _AUTH, end):
        return _AUTH
    return data[start:end]


def _remembered(memo: PathMemo, data: bytes, at: i64, n: i64) -> bool:
    """Whether the path lines at `at` are the memo's (within the bytes walked)."""
    block = memo.block
    end = at + len(block)
    return len(block) != 0 and end <= n and data[at:end] == block


def _shift(span: tuple[int, int, int], by: int) -> tuple[int, int, int]:
    return span[0] + by, span[1] + by, span[2] + by


def _ends(
    data: bytes, held: bytearray | None, n: i64, sep: i64, tid: bytes, max_body: int
) -> tuple[i64, i64, i64]:
    """(body start or -1, end-line start, frame end) of the frame whose head ends at `sep`
    (read_whole_frame's `_read` says what `data`, `held` and `n` are); the end is -1 if the
    end-line is not there (yet), or the body is over `max_body`."""
    size: i64 = len(data) if held is None else len(held)
    if sep + 1 >= n:
        return 0, 0, -1  # the head goes on beyond the bytes walked
    if data[sep] == 45:  # bodiless: this line must be the end-line
        end = sep + 7 + len(tid) + 3  # dashes, tid, flag, CRLF
        if not (_starts(data, sep, _DASHES, n) and _starts(data, sep + 7, tid, n)) or end > size:
            return 0, 0, -1
        return -1, sep, end
    if data[sep + 1] != 10:
        return 0, 0, -1
    # The end-line is the first CRLF "-------" tid after the blank line (whose own CRLF may
    # start it: an empty body).
    found: i64 = _end_line(data, sep, tid) if held is None else held.find(_MARK + tid, sep)
    end = found + len(_MARK) + len(tid) + 3
    if found < 0 or found - sep - 2 > max_body or end > size:
        return 0, 0, -1
    return sep + 2, found + 2, end


def _end_line(data: bytes, start: i64, tid: bytes) -> i64:
    """data.find(_MARK + tid, start). The first _SCAN_MAX bytes are scanned here, Horspool's
    way on the marker's last dash (a byte other than CR, LF or "-" skips 9: about 12 steps
    for a 100-byte body), since bytes.find parses its arguments and needs the marker made
    first: about 1,600 instructions a call (issue 16). Past them, bytes.find: over a long
    body its per-byte speed outweighs that."""
    n: i64 = len(data)
    last: i64 = len(_MARK) - 1
    stop: i64 = min(n, start + _SCAN_MAX)
    at = start + last  # where the marker's last dash would be
    while at < stop:
        c = data[at]
        if c == 45:  # "-"
            if _starts(data, at - last, _MARK, n) and _starts(data, at + 1, tid, n):
                return at - last
            at += 1
        elif c == 10:
            at += last - 1
        elif c == 13:
            at += last
        else:
            at += last + 1
    if stop == n:
        return -1
    # A marker whose last dash is at `stop` or after starts at stop - last or after.
    return data.find(_MARK + tid, max(start, stop - last))


def _run(data: bytes, at: i64, end: i64, kind: int) -> i64:
    """Where the run of bytes of class `kind` from `at` ends (at most `end`)."""
    while at < end and _CLASS[data[at]] & kind:
        at += 1
    return at


def _line_end(data: bytes, at: i64, n: i64) -> i64:
    """Where the CRLF ending the line walked from `at` starts, every byte before it utf8text
    without HTAB (grammar.LINE_TEXT); -1 if another byte comes first, or the end of `data`."""
    while at < n:
        c = data[at]
        if c < 32 or c == 127:
            if c == 13 and at + 1 < n and data[at + 1] == 10:
                return at
            return -1
        at += 1
    return -1


def _starts(data: bytes, at: i64, prefix: bytes, n: i64) -> bool:
    """data[at:].startswith(prefix), compared in place (bytes.startswith with a start
    parses its arguments: a generic call)."""
    size: i64 = len(prefix)
    if at + size > n:
        return False
    i: i64 = 0
    while i < size:
        if data[at + i] != prefix[i]:
            return False
        i += 1
    return True


def _status_code(data: bytes, at: i64, end: i64) -> int:
    """The status code if the first line's rest data[at:end] is `3DIGIT [SP comment]`, else
    -1 (a method: a third token of three digits makes a response, RFC 4975 §9)."""
    if end - at < 3 or (end - at > 3 and data[at + 3] != 32):
        return -1
    d0, d1, d2 = data[at] - 48, data[at + 1] - 48, data[at + 2] - 48
    if 0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9:
        return d0 * 100 + d1 * 10 + d2
    return -1


def _path(data: bytes, at: i64, n: i64, name: bytes) -> tuple[i64, i64, i64, i64]:
    """The To-Path or From-Path line `name` (with its colon) starting at `at`: its value's
    span as path_span gives it (blanks around it excluded, the end of its first URI) and
    where its CRLF starts; that last is -1 if the line is not such a line. The value may not
    be blank; SP is the only blank a line here holds (HTAB sends it to the state machine)."""
    if not _starts(data, at, name, n):
        return 0, 0, 0, -1
    start: i64 = at + len(name)
    while start < n and data[start] == 32:
        start += 1
    first = start
    while first < n:  # the first URI
        c = data[first]
        if c <= 32 or c == 127:
            break
        first += 1
    if first == start:
        return 0, 0, 0, -1
    cr = _line_end(data, first, n)
    if cr < 0:
        return 0, 0, 0, -1
    end = cr
    while data[end - 1] == 32:
        end -= 1
    return start, first, end, cr


def _header_line(data: bytes, at: i64, n: i64) -> i64:
    """Where the line after the header line at `at` starts, if that line is `hname ":"
    utf8text` naming neither path nor a defined header in other than canonical case; else -1."""
    value: i64 = -1
    for known in _KNOWN[data[at]]:
        if _starts(data, at, known, n):
            value = at + len(known)
            break
    if value < 0:
        # hname: ALPHA *token-char (RFC 4975 §9); a defined name in other case goes to the
        # state machine, which notes it (hnames.py); To-Path or From-Path again is an error.
        colon = _run(data, at, n, _TOKEN)
        if not at < colon < n or data[colon] != 58 or not _CLASS[data[at]] & _ALPHA:
            return -1
        if data[at:colon].lower() in _DEFINED:
            return -1
        value = colon + 1
    end = _line_end(data, value, n)
    if end < 0:
        return -1
    return end + 2


def path_span(buf: bytes | bytearray, start: int, first_end: int, end: int) -> tuple[int, int, int]:
    """(start, end of first URI, end without trailing blanks) of a path header value."""
    while buf[end - 1] in b" \t":
        end -= 1
    return start, first_end, end
