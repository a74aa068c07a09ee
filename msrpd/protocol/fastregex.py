"""The reader's fast path under the interpreter: a complete, well-formed frame read with one
regex match and a find.

Strategy: FAST_HEAD checks the first line and header block at once (RFC 4975 §9); one find
locates CRLF "-------" tid; the flag and CRLF are checked (§7.1). Anything else returns None
and the state machine reads the frame. Interpreted, this is the cheaper way (the regex's
work is all C); compiled, fastpath.py's walk over the head is (issue 16); wholeread.py picks one
at import. Both return the same Frame or None for the same bytes, but for heads fastpath.py
leaves to the state machine, which reads them alike (tests/protocol/test_fastpath.py).
"""

from __future__ import annotations

from .fastpath import path_span
from .frame import Frame
from .grammar import DASHES, FAST_HEAD, FLAGS

__all__ = ["read_whole_frame_regex"]

_FLAG_BYTES = {byte: bytes((byte,)) for byte in FLAGS}


def read_whole_frame_regex(buf: bytes | bytearray, max_body: int) -> Frame | None:
    """The frame at the start of `buf` (the reader's buffer, or a read as it came) if it is
    complete and well formed, else None. Consumes nothing."""
    m = FAST_HEAD.match(buf)
    if m is None:
        return None
    # The groups one at a time: groups() would copy all nine, path values included.
    tid = m[1]
    sep, after = m.span(9)
    marker = b"\r\n" + DASHES + tid
    if after - sep == 2:  # CRLF, not the dashes of a bodiless frame's end-line
        at = buf.find(marker, sep)  # from the blank line's CRLF: an empty body may follow
        end = at + len(marker) + 3
        if at < 0 or at - sep - 2 > max_body or end > len(buf):
            return None
        body_start, end_start = sep + 2, at + 2
    else:
        end = sep + len(marker) + 1
        body_start, end_start = -1, sep
        if end > len(buf) or not buf.startswith(marker, sep - 2):
            return None
    data = bytes(buf[:end])
    # The end-line's flag and CRLF (grammar.closes_end_line), read on the bytes.
    flag = _FLAG_BYTES.get(data[end - 3])
    if flag is None or data[end - 2] != 13 or data[end - 1] != 10:
        return None
    to_start, to_end = m.span(5)
    from_start, from_end = m.span(7)
    code = m[2]
    comment = m[3] if code else None
    return Frame(
        data,
        data[5 : 5 + len(tid)],
        None if code else bytes(m[4]),
        int(code) if code else None,
        (b"" if comment is None else bytes(comment)) if code else None,
        sep,
        body_start,
        end_start,
        flag,
        path_span(data, to_start, m.end(6), to_end),
        path_span(data, from_start, m.end(8), from_end),
    )
