"""Frame: one MSRP request or response as received, with lazy header access.

Strategy: the reader has already delimited the frame and checked its header block (its fast
path or its state machine: RFC 4975 §9 grammar, To-Path first and From-Path second, §7.1), so
a Frame only stores
offsets into the received bytes. Anything else (other headers, path URIs, Message-ID) is parsed
the first time it is asked for and cached. Bodies are memoryview slices: never copied.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from ..hotpath import pure_requested
from .uri import split_path

if TYPE_CHECKING:
    from mypy_extensions import i64  # compiled, a native int; interpreted, never looked up

__all__ = ["Frame", "Method", "OddNamesFrame"]

# Method names the relay knows (RFC 4975 §9, RFC 4976 §7); any other token is still a request.
SEND: Final = b"SEND"
REPORT: Final = b"REPORT"
AUTH: Final = b"AUTH"


class Method:
    """Kamailio's integer method ids, used by `$msrp(method)` comparisons (reference §2.1)."""

    OTHER: Final = 0
    SEND: Final = 1
    AUTH: Final = 2
    REPORT: Final = 3


_METHOD_IDS = {SEND: Method.SEND, AUTH: Method.AUTH, REPORT: Method.REPORT}

# Interpreted, bytes.split counts a path's URIs in the fewest instructions; compiled, a loop
# over the bytes does (no list, no piece: Frame.to_count).
_SPLIT_TO_COUNT: Final = pure_requested()

# One header line: name, colon, value (RFC 4975 §9 `hname ":" SP hval`; the SP is optional
# here because peers in the field omit it, and Kamailio accepts that too).
_HEADER_LINE = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")


class Frame:
    """A delimited MSRP frame.

    Attributes:
        buf: the frame's bytes, first line to end-line inclusive; for a streamed frame (body
            larger than the reader's whole-frame limit) the head only, up to the blank line.
        tid: the transaction id.
        method: the request method, or None for a response.
        code / reason: the response status and reason phrase (b"" when absent), or None.
        hdr_end: the header block is buf[hdr_start:hdr_end], CRLFs included.
        body_start: where the body starts (after the blank line), or -1 for a bodiless frame.
        end_start: where the end-line's dashes start, or -1 for a streamed frame.
        flag: the continuation flag (b"$", b"+" or b"#"), or None for a streamed frame.
        to_span / from_span: (start, end of the first URI, end) of the To-Path and From-Path
            values, blanks around them excluded.
        odd_names: a header name RFC 4975/4976 defines is not in canonical case: the head
            is rebuilt when the frame is relayed (hnames.py). True on OddNamesFrame only.
    """

    odd_names = False

    __slots__ = (
        "_from",
        "_headers",
        "_to",
        "_to_count",
        "body_start",
        "buf",
        "code",
        "end_start",
        "flag",
        "from_span",
        "hdr_end",
        "method",
        "reason",
        "tid",
        "to_span",
    )

    def __init__(
        self,
        buf: bytes,
        tid: bytes,
        method: bytes | None,
        code: int | None,
        reason: bytes | None,
        hdr_end: int,
        body_start: int,
        end_start: int,
        flag: bytes | None,
        to_span: tuple[int, int, int],
        from_span: tuple[int, int, int],
        to_count: int = 0,
    ) -> None:
        """`to_count`: the To-Path URIs when the reader knows them (fastpath.PathMemo), 0 to
        count them at first use."""
        self.buf = buf
        self.tid = tid
        self.method = method
        self.code = code
        self.reason = reason
        self.hdr_end = hdr_end
        self.body_start = body_start
        self.end_start = end_start
        self.flag = flag
        self.to_span = to_span
        self.from_span = from_span
        self._headers: list[tuple[bytes, bytes, int]] | None = None
        self._to: list[str] | None = None
        self._from: list[str] | None = None
        self._to_count = to_count

    def __repr__(self) -> str:
        kind = self.method if self.method is not None else self.code
        return f"<Frame {self.tid!r} {kind!r} {len(self.buf)}B flag={self.flag!r}>"

    # -- kind -----------------------------------------------------------------------------
    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def is_response(self) -> bool:
        return self.method is None

    @property
    def streamed(self) -> bool:
        """True when the body follows as BodyPiece events (it exceeded the whole-frame limit)."""
        return self.end_start < 0

    @property
    def method_id(self) -> int:
        return _METHOD_IDS.get(self.method or b"", Method.OTHER)

    # -- body -----------------------------------------------------------------------------
    @property
    def has_body(self) -> bool:
        return self.body_start >= 0

    @property
    def body(self) -> memoryview | None:
        """The data (RFC 4975 §9 `data`): between the blank line and the CRLF before the
        end-line. None for a bodiless or streamed frame."""
        if self.body_start < 0 or self.end_start < 0:
            return None
        # The CRLF before the end-line is not data (RFC 4975 §7.1); a blank line directly
        # followed by the end-line is read as an empty body.
        end = max(self.body_start, self.end_start - 2)
        return memoryview(self.buf)[self.body_start : end]

    # -- headers --------------------------------------------------------------------------
    @property
    def hdr_start(self) -> int:
        return self.buf.index(b"\r\n") + 2  # the first line holds no CR or LF

    @property
    def hdrs(self) -> bytes:
        """The raw header block: every header line with its CRLF."""
        return self.buf[self.hdr_start : self.hdr_end]

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header as (name as written, trimmed value), in order."""
        return [(name, value) for name, value, _ in self._header_list()]

    def header(self, name: str | bytes) -> bytes | None:
        """The trimmed value of the first header called `name` (case-insensitive), or None."""
        want = (name.encode() if isinstance(name, str) else name).lower()
        for hname, value, _ in self._header_list():
            if hname.lower() == want:
                return value
        return None

    def header_line(self, name: str | bytes) -> bytes | None:
        """The first raw header line called `name` (case-insensitive), CRLF included."""
        want = (name.encode() if isinstance(name, str) else name).lower()
        for hname, _, start in self._header_list():
            if hname.lower() == want:
                return self.buf[start : self.buf.index(b"\r\n", start) + 2]
        return None

    def _header_list(self) -> list[tuple[bytes, bytes, int]]:
        if self._headers is None:
            self._headers = [
                (m[1], m[2], m.start())
                for m in _HEADER_LINE.finditer(self.buf, self.hdr_start, self.hdr_end)
            ]
        return self._headers

    # -- paths ----------------------------------------------------------------------------
    @property
    def to_path_raw(self) -> bytes:
        return self.buf[self.to_span[0] : self.to_span[2]]

    @property
    def from_path_raw(self) -> bytes:
        return self.buf[self.from_span[0] : self.from_span[2]]

    @property
    def first_to(self) -> bytes:
        """The first To-Path URI (this relay, RFC 4976 §6.2) as received."""
        return self.buf[self.to_span[0] : self.to_span[1]]

    @property
    def first_from(self) -> bytes:
        """The first From-Path URI (the previous hop) as received."""
        return self.buf[self.from_span[0] : self.from_span[1]]

    @property
    def failure_report(self) -> bytes:
        """Failure-Report, lower case: b"yes", b"no" or b"partial"; absent is b"yes" (RFC
        4975 §7.1.1). Not kept: the relay route asks twice per SEND (t_reply, t_relay), one
        search each, and the cmap route never. A frame with every defined name in canonical
        case (not odd_names: the reader's fast path or grammar.HEAD took its head) is searched
        for that spelling alone, from the To-Path value on (the first header, RFC 4975 §7.1)."""
        found: bytes | None
        if self.odd_names:
            found = self.header(b"failure-report")
        else:
            buf = self.buf
            at = buf.find(b"\r\nFailure-Report:", self.to_span[0], self.hdr_end)
            found = None if at < 0 else buf[at + 17 : buf.index(b"\r\n", at + 17)].strip(b" \t")
        return b"yes" if found is None else found.lower()

    def message_id_line(self) -> bytes | None:
        """The first Message-ID header line as received, CRLF included, its name in
        canonical case (the relay copies it into its responses: hnames.py)."""
        # From the To-Path value on: To-Path is the first header (RFC 4975 §7.1), and no
        # value holds a CR, so nothing before it can match.
        buf = self.buf
        at = buf.find(b"\r\nMessage-ID:", self.to_span[0], self.hdr_end)
        if at >= 0:  # the usual spelling, found without parsing the header block
            return buf[at + 2 : buf.index(b"\r\n", at + 2) + 2]
        line = self.header_line(b"message-id")
        return None if line is None else b"Message-ID" + line[10:]

    @property
    def to_count(self) -> int:
        """How many To-Path URIs, without decoding them (nexthops is this minus one).
        Counted once: the loop check and `$msrp(nexthops)` both ask for every frame."""
        count = self._to_count
        if count == 0:
            start, first_end, end = self.to_span
            if first_end == end:
                count = 1
            elif self._to is not None:
                count = len(self._to)
            elif _SPLIT_TO_COUNT:
                count = len(self.buf[start:end].split())
            else:
                count = 1 + _words(self.buf, first_end, end)
            self._to_count = count
        return count

    @property
    def to_path(self) -> list[str]:
        """To-Path URIs, leftmost (the next hop, RFC 4975 §7.1) first."""
        if self._to is None:
            self._to = split_path(self.to_path_raw)
        return self._to

    @property
    def from_path(self) -> list[str]:
        """From-Path URIs, leftmost (the previous hop) first."""
        if self._from is None:
            self._from = split_path(self.from_path_raw)
        return self._from

    @property
    def message_id(self) -> bytes | None:
        return self.header(b"message-id")


def _words(buf: bytes, at: i64, end: i64) -> int:
    """How many words buf[at:end] holds, as bytes.split() cuts them (at ASCII whitespace)."""
    count = 0
    blank = True
    while at < end:
        c = buf[at]
        if c == 32 or 9 <= c <= 13:
            blank = True
        elif blank:
            count += 1
            blank = False
        at += 1
    return count


class OddNamesFrame(Frame):
    """A Frame in which a header name RFC 4975/4976 defines is not in canonical case (the
    reader's state machine makes it, partial.py): relayed, its head is rebuilt with the
    canonical names (hnames.py). A class rather than a field: the usual frame carries nothing
    more for it."""

    __slots__ = ()

    odd_names = True
