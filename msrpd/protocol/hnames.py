"""The header names RFC 4975 and RFC 4976 define, and how the relay writes them.

Rules (RFC 4975 §9 via RFC 4234 §2.3; rfc-checklist §1.6 and case 8a): a header name is
matched in any case, and the relay always emits the canonical case. The reader's fast
path (fastpath.py, fastregex.py, grammar.HEAD) takes the defined names in canonical case only, so a
frame whose names are all canonical costs nothing more; a head it refuses is tried in any
case (grammar.HEAD_ANY_CASE) and, if that takes it, the frame carries `odd_names`: only
such a frame has its head rebuilt (`canonical_head`) when it is relayed. Extension headers
(RFC 4975 §12) stay as they are spelled.
"""

from __future__ import annotations

import re

__all__ = ["CANONICAL", "OTHER_NAMES", "canonical_head"]

OTHER_NAMES = (
    b"Message-ID",
    b"Byte-Range",
    b"Content-Type",
    b"Failure-Report",
    b"Success-Report",
    b"Status",
    b"Use-Path",
    b"Expires",
    b"Min-Expires",
    b"Max-Expires",
    b"WWW-Authenticate",
    b"Authorization",
    b"Authentication-Info",
    b"Content-ID",
    b"Content-Description",
    b"Content-Disposition",
)
"""The defined names but To-Path and From-Path (which the grammar places first), the usual
ones first: the reader's fast path tries them in this order."""
CANONICAL = {name.lower(): name for name in (b"To-Path", b"From-Path", *OTHER_NAMES)}
"""Lower-case name -> its canonical spelling."""

_NAME = re.compile(rb"\r\n([A-Za-z][^:\r\n]*):")


def canonical_head(buf: bytes, hdr_start: int, hdr_end: int) -> bytes:
    """buf[:hdr_end] with every defined header name of the block buf[hdr_start:hdr_end]
    (header lines, CRLFs included) in canonical case. Same length: only letters' case
    changes, so every offset into the head still holds."""
    at = hdr_start - 2  # the first line's CRLF: every header line follows a CRLF
    return buf[:at] + _NAME.sub(_canonical, buf[at:hdr_end])


def _canonical(m: re.Match[bytes]) -> bytes:
    name = m[1]
    return b"\r\n%s:" % CANONICAL.get(name.lower(), name)
