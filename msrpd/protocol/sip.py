"""Framing of a SIP message that arrives on the MSRP port.

Rules: Kamailio decides per message whether bytes are MSRP (they start with "MSRP ") or SIP
(reference §1.1); the seed config answers SIP with 403. A SIP message over a stream ends after
its blank line plus Content-Length bytes (RFC 3261 §18.3; `l` is the compact form, §7.3.3).
"""

from __future__ import annotations

import re

__all__ = ["build_sip_reply", "sip_message_end"]

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*\r\n", re.I)
_ANY_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:", re.I)
# Headers a stateless reply copies from the request (RFC 3261 §8.2.6.2), long and compact forms.
_COPIED = re.compile(rb"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[^\r\n]*\r\n", re.I | re.M)
_TO_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.I)


def sip_message_end(buf: bytearray, scan: int) -> tuple[int, int]:
    """Find where the SIP message at the start of `buf` ends.

    Returns (end, scan): end is the index past the message, -1 while it is incomplete (resume
    the search at `scan`), or -2 when the Content-Length header is unreadable.
    """
    blank = buf.find(b"\r\n\r\n", scan)
    if blank < 0:
        return -1, max(scan, len(buf) - 3)
    head = bytes(buf[: blank + 2])
    m = _CONTENT_LENGTH.search(head)
    if m is None:
        if _ANY_LENGTH.search(head):
            return -2, blank
        length = 0  # RFC 3261 §18.3 makes it mandatory on TCP; a missing one means no body
    else:
        length = int(m[1])
    end = blank + 4 + length
    if end > len(buf):
        return -1, blank
    return end, blank


def build_sip_reply(request: bytes, code: int, reason: str, to_tag: str) -> bytes | None:
    """A stateless SIP response to `request` (RFC 3261 §8.2.6), or None for a SIP response
    (never answered) or a request without the headers a reply must copy."""
    if request.startswith(b"SIP/"):
        return None
    head = request.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    found = [(_LONG.get(m[1].lower(), m[1].lower()), m[0]) for m in _COPIED.finditer(head)]
    if not {b"call-id", b"cseq"} <= {name for name, _ in found}:
        return None
    out = [b"SIP/2.0 %d %s\r\n" % (code, reason.encode())]
    for name, line in found:
        tagged = name == b"to" and not _TO_TAG.search(line)
        out.append(line[:-2] + b";tag=" + to_tag.encode() + b"\r\n" if tagged else line)
    out.append(b"Server: msrpd\r\nContent-Length: 0\r\n\r\n")
    return b"".join(out)


_LONG = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}
