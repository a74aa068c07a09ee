"""The frame the reader's state machine is in the middle of: what is known of it so far.

Strategy: reader.py decides what to read next; this record holds the frame's offsets into the
reader's buffer (the frame being read always starts at offset 0), parses its first line and
head (RFC 4975 §9) and finds its end-line (§7.1). Each search remembers where it stopped
(`scan`, `blank`, `dash`), so input that arrives one byte at a time costs O(n) in total. The
reader takes a fresh record for every frame its fast path cannot read, so nothing of one frame
leaks into the next.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import LocalProtocolError
from .events import InvalidFrame
from .fastpath import path_span
from .frame import Frame, OddNamesFrame
from .grammar import (
    DASHES,
    FIRST_LINE,
    HEAD,
    HEAD_ANY_CASE,
    RESPONSE_HINT,
    SIP_START,
    TID_PREFIX,
    closes_end_line,
    diagnose_head,
)
from .memsearch import find
from .status import Status
from .uri import PathCheck

__all__ = [
    "FIRST_LINE_MSRP",
    "FIRST_LINE_SIP",
    "FIRST_LINE_WAITS",
    "MSRP_START",
    "PartialFrame",
    "check_prefix",
    "marker_tail",
]

MSRP_START = b"MSRP "
FIRST_LINE_WAITS: Final = 0
FIRST_LINE_MSRP: Final = 1
FIRST_LINE_SIP: Final = 2


def marker_tail(buf: bytes | bytearray, marker: bytes, scan: int) -> int:
    """Where the tail of `buf` that could begin `marker` starts: the first CR (a marker
    starts with CRLF) from `scan` on whose suffix is a prefix of `marker`; len(buf) if none.
    `marker` does not occur whole in buf[scan:]."""
    size = len(buf)
    at = buf.find(b"\r", max(scan, size - len(marker) + 1))
    while at >= 0:
        if marker.startswith(buf[at:]):
            return at
        at = buf.find(b"\r", at + 1)
    return size


class PartialFrame:
    """One frame read piece by piece: first line, head checks, end-line search."""

    __slots__ = (
        "blank",
        "body_start",
        "dash",
        "error",
        "fl_end",
        "line",
        "marker",
        "odd_names",
        "refused",
        "response",
        "scan",
        "spans",
        "tid",
    )

    def __init__(self) -> None:
        self.scan = 0  # where the current search resumes
        self.blank = _Search(b"\r\n\r\n")  # the blank line ending a head with a body
        self.dash = _Search(b"\r\n-")  # a line starting with "-": a bodiless frame's end-line
        self.fl_end = -1  # end of the first line, once it is read
        self.body_start = -1
        self.tid = b""
        self.marker = b""  # CRLF "-------" tid: how the end-line starts
        self.line: re.Match[bytes] | None = None  # the first line, when it is well formed
        self.response = False
        self.spans = ((0, 0, 0), (0, 0, 0))  # To-Path and From-Path, once the head passed
        self.odd_names = False  # a defined header name not in canonical case (hnames.py)
        self.error = ""  # what is wrong with the first line, reported once the head is in
        self.refused: InvalidFrame | None = None  # answered once the refused body has passed

    def read_first_line(self, buf: bytearray, max_head: int) -> int:
        """Read the first line if it has arrived: FIRST_LINE_WAITS (not yet), FIRST_LINE_MSRP
        (parsed) or FIRST_LINE_SIP (a SIP start line: `scan` is at its CR)."""
        lf = buf.find(b"\n", self.scan)
        if lf < 0:
            self.scan = len(buf)
            check_prefix(buf, max_head)
            return FIRST_LINE_WAITS
        if not buf.startswith(MSRP_START):
            if SIP_START.fullmatch(buf, 0, max(lf - 1, 0)) and buf[lf - 1] == 13:
                self.scan = lf - 1
                return FIRST_LINE_SIP
            raise LocalProtocolError("not an MSRP frame")
        self.parse_first_line(buf, lf)
        return FIRST_LINE_MSRP

    def parse_first_line(self, buf: bytearray, lf: int) -> None:
        """Read the MSRP first line ending with the LF at `lf`. A line whose transaction id
        can be read is kept even when malformed: the frame can still be delimited and
        answered (RFC 4975 §7.1)."""
        if buf[lf - 1] != 13:
            prefix = TID_PREFIX.match(buf)
            tid = prefix[1] if prefix else None
            raise LocalProtocolError("line ends in a bare LF (RFC 4975 §9 needs CRLF)", tid=tid)
        end = lf - 1
        m = FIRST_LINE.fullmatch(buf, 0, end)
        if m is None:
            prefix = TID_PREFIX.match(buf, 0, end)
            if prefix is None:
                raise LocalProtocolError("unreadable transaction id in the first line")
            tid = prefix[1]
            self.response = RESPONSE_HINT.match(buf, 0, end) is not None
            self.error = "malformed first line (RFC 4975 §9)"
        else:
            tid = m[1]
            self.line = m
            self.response = m[2] is not None
        self.tid = bytes(tid)
        self.marker = b"\r\n" + DASHES + self.tid
        self.fl_end = end
        self.blank.scan = self.dash.scan = end

    def refuse(
        self, buf: bytearray, hdr_end: int, reason: str, status: Status = Status.UNINTELLIGIBLE
    ) -> InvalidFrame:
        return InvalidFrame(self.tid, status, reason, not self.response, bytes(buf[:hdr_end]))

    def check_head(self, buf: bytearray, hdr_end: int, paths: PathCheck) -> InvalidFrame | None:
        """Check the first line and header block; record the path spans when they are good."""
        if self.error:
            return self.refuse(buf, hdr_end, self.error)
        m = HEAD.fullmatch(buf, self.fl_end + 2, hdr_end)
        if m is None:  # a defined name not in canonical case, or a bad head (rare)
            m = HEAD_ANY_CASE.fullmatch(buf, self.fl_end + 2, hdr_end)
            if m is None:
                block = bytes(buf[self.fl_end + 2 : hdr_end])
                return self.refuse(buf, hdr_end, diagnose_head(block))
            self.odd_names = True
        self.spans = (
            path_span(buf, m.start(1), m.end(2), m.end(1)),
            path_span(buf, m.start(3), m.end(4), m.end(3)),
        )
        problem = paths.problem(buf, *self.spans)
        return None if problem is None else self.refuse(buf, hdr_end, problem)

    def is_endline(self, buf: bytearray, start: int, end: int) -> bool:
        """Whether buf[start:end] is "-------" tid flag CRLF (RFC 4975 §9 end-line)."""
        marker = self.marker
        return (
            end - start == len(marker) + 1
            and buf.startswith(marker[2:], start)
            and closes_end_line(buf, end)
        )

    def find_end(self, buf: bytearray) -> int:
        """Search for CRLF "-------" tid flag CRLF from `scan`. Return the index just past the
        end-line (then `scan` is where its CRLF starts), or -1 (then `scan` is where the
        search resumes, and nothing before it can be part of the end-line)."""
        marker = self.marker
        size = len(marker)
        while True:
            at = find(buf, marker, self.scan)
            if at < 0:
                self.scan = marker_tail(buf, marker, self.scan)
                return -1
            end = at + size + 3
            if end > len(buf):
                self.scan = at  # the flag and CRLF have not arrived yet
                return -1
            if closes_end_line(buf, end):
                self.scan = at
                return end
            self.scan = at + 1

    def make_frame(
        self, buf: bytes, body_start: int, end_start: int, flag: bytes | None, hdr_end: int = -1
    ) -> Frame:
        m = self.line
        assert m is not None  # check_head passed, so the first line matched
        code = m[2]
        to_span, from_span = self.spans
        # A defined header name in another case: a frame that says so (hnames.py).
        return (OddNamesFrame if self.odd_names else Frame)(
            buf,
            self.tid,
            None if code else bytes(m[4]),
            int(code) if code else None,
            (bytes(m[3]) if m[3] is not None else b"") if code else None,
            hdr_end if hdr_end >= 0 else body_start - 2,
            body_start,
            end_start,
            flag,
            to_span,
            from_span,
        )


def check_prefix(buf: bytearray, max_head: int) -> None:
    """Refuse a first line still without its LF once it is too long or cannot become one."""
    if len(buf) > max_head:
        raise LocalProtocolError(f"first line exceeds {max_head} bytes")
    head = bytes(buf[:5])
    # Still possibly "MSRP " or a SIP start line (upper-case method or "SIP/2.0").
    if not (MSRP_START.startswith(head) or head.startswith(MSRP_START) or head[:1].isupper()):
        raise LocalProtocolError("not an MSRP frame")


class _Search:
    """A search for `needle` that resumes where the last attempt stopped."""

    __slots__ = ("found", "needle", "scan")

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.found = -1
        self.scan = 0

    def run(self, buf: bytearray, end: int) -> int:
        """Where `needle` first lies wholly in buf[:end], resuming; -1 if nowhere yet."""
        if self.found < 0:
            self.found = buf.find(self.needle, self.scan, end)
            if self.found < 0:
                self.scan = max(self.scan, end - len(self.needle) + 1)
        return self.found
