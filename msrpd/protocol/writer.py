"""Frame writers: replies, failure reports, new requests.

Rules:
- `build_reply` lays a response out exactly as Kamailio's msrp_reply (reference §7): first
  line, To-Path, From-Path, the request's Message-ID line as received, extra headers, end-line
  with flag "$". Where Kamailio is wrong we follow the RFC: the To-Path of a response to a
  non-SEND request is the whole From-Path (RFC 4975 §7.2; Kamailio copies only the first
  URI), paths come from the parsed URIs so trailing blanks never leak into a line, and an empty
  reason gives `MSRP tid 200` without a trailing space (RFC 4975 §9 `[SP comment]`).
- A received frame rewritten for its next hop (relay_splice and the like) is splice.py's.
- Writers never read clocks or randomness: transaction ids come from the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..hotpath import pure_requested
from .errors import LocalProtocolError, MsrpProtocolError
from .events import InvalidFrame
from .frame import SEND, Frame
from .grammar import DASHES, HEADER_LINE, UTF8TEXT
from .uri import path_problem

if TYPE_CHECKING:
    from mypy_extensions import i64  # compiled, a native int; interpreted, never looked up

__all__ = [
    "ReportBasis",
    "build_error_reply",
    "build_failure_report",
    "build_invalid_reply",
    "build_reply",
    "build_request",
    "build_response",
    "invalid_gets_reply",
    "report_basis",
]

# Bare-LF lines too: a frame refused for its LF line endings is still answered (DESIGN §8).
_PATH_LINE = re.compile(rb"^(to-path|from-path)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)
_RESPONSE_LINE = re.compile(rb"MSRP [^ \r\n]+ [0-9]{3}(?:[ \r\n]|$)")
_STATUS_TEXTS: Final[dict[tuple[int, str | bytes], bytes]] = {}  # _reply_status's
_STATUS_TEXTS_MAX: Final = 64
_STATUS_TEXT_KEPT: Final = 128  # bytes
_RFC_NOTE = re.compile(r"\s*\(RFC [^)]*\)")
_METHOD = re.compile(rb"MSRP [^ \r\n]+ ([^ \r\n]+)")
_FAILURE_REPORT_NO = re.compile(rb"^failure-report[ \t]*:[ \t]*no[ \t]*\r?$", re.I | re.M)
# Compiled, a loop over a header value's bytes finds its CRLF in a few instructions a byte
# (bytes.index parses its arguments: about 1,200 a call); interpreted, bytes.index is cheaper.
_SCAN_LINES: Final = not pure_requested()


def build_reply(frame: Frame, code: int, reason: str | bytes, extra: str | bytes = b"") -> bytes:
    """The response to `frame` (a request), Kamailio's layout with the RFC fixes above.

    Args:
        code: a three-digit status.
        reason: the comment after the code; may be empty.
        extra: header lines to add after Message-ID, CRLF-terminated (one is added if missing).

    Raises:
        LocalProtocolError: `frame` is a response, or code, reason or extra are malformed.
    """
    method = frame.method
    if method is None:
        raise LocalProtocolError("a response is never answered (RFC 4975 §7.2)")
    to_path = frame.first_from if method == b"SEND" else b" ".join(frame.from_path_raw.split())
    msgid = _message_id_line(frame)
    return _response(frame.tid, _reply_status(code, reason), to_path, frame.first_to, msgid, extra)


def _message_id_line(frame: Frame) -> bytes:
    """frame.message_id_line(), found without a search in the usual layout: To-Path, From-Path
    then Message-ID, one space after each name (13 bytes between the path values: no other
    header line fits there)."""
    buf, at = frame.buf, frame.from_span[2]
    if frame.from_span[0] - frame.to_span[2] == 13 and buf[at : at + 14] == b"\r\nMessage-ID: ":
        # An int, not i64 | int: compiled, a union made the slice below a generic one.
        end: int = _crlf_at(buf, at + 14, frame.hdr_end) if _SCAN_LINES else -1
        if end < 0:
            end = buf.index(b"\r\n", at + 14)
        return buf[at + 2 : end + 2]
    return frame.message_id_line() or b""


def _crlf_at(buf: bytes, at: i64, stop: i64) -> i64:
    """buf.find(b"\r\n", at) if that is before `stop`, else -1 (compiled: _SCAN_LINES)."""
    while at + 1 < stop:
        if buf[at] == 13 and buf[at + 1] == 10:
            return at
        at += 1
    return -1


def invalid_gets_reply(invalid: InvalidFrame) -> bool:
    """Whether a frame the reader refused is answered at all (our checklist §2.1 step 1): never
    a response (RFC 4975 §7.2), a REPORT (§7.1.2) or a request with Failure-Report: no
    (§7.1.4). Those are dropped; the stream is still in sync."""
    if not invalid.is_request:
        return False
    method = _METHOD.match(invalid.head)
    if method is not None and method[1] == b"REPORT":
        return False
    return _FAILURE_REPORT_NO.search(invalid.head) is None


def build_invalid_reply(invalid: InvalidFrame, self_uri: bytes = b"") -> bytes | None:
    """The response to a request the reader refused, or None when it gets none
    (invalid_gets_reply) or cannot be addressed (no readable To-Path and From-Path: then the
    connection is closed). `self_uri`, when given, is the From-Path used in place of a first
    To-Path URI that does not parse, so that the sender can read the 400 (RFC 4975 §7.2 wants
    our URI there; what the sender wrote is not one)."""
    if not invalid_gets_reply(invalid):
        return None
    paths: dict[bytes, bytes] = {}
    for m in _PATH_LINE.finditer(invalid.head):
        paths.setdefault(m[1].lower(), m[2])
    to_value, from_value = paths.get(b"to-path"), paths.get(b"from-path")
    if not to_value or not from_value or not UTF8TEXT.fullmatch(to_value + from_value):
        return None
    method = _METHOD.match(invalid.head)
    from_uris = from_value.split()
    to_path = from_uris[0] if method and method[1] == SEND else b" ".join(from_uris)
    from_path = to_value.split()[0]
    if self_uri and path_problem(from_path, "To-Path") is not None:
        from_path = self_uri
    # The wire gets the plain reason; the RFC section it cites stays in the log.
    reason = f"{invalid.status.reason} ({_RFC_NOTE.sub('', invalid.reason)})"
    status = _status_text(invalid.status, reason)
    return _response(invalid.tid, status, to_path, from_path, b"", b"")


def build_error_reply(exc: MsrpProtocolError) -> bytes | None:
    """The answer to a frame that made the reader give up on the stream, sent before the
    connection closes: possible when its transaction id and paths were read (DESIGN §8)."""
    if exc.tid is None or not exc.head:
        return None
    is_request = _RESPONSE_LINE.match(exc.head) is None
    return build_invalid_reply(InvalidFrame(exc.tid, exc.status, exc.message, is_request, exc.head))


def build_response(
    tid: bytes, code: int, reason: str, to_path: bytes, from_path: bytes, msgid_line: bytes = b""
) -> bytes:
    """A response built from what a transaction kept of its request, not the request itself
    (a forwarded AUTH that timed out: rfc-checklist §2.6).

    Raises:
        LocalProtocolError: the code is not three digits, or the reason holds a control.
    """
    return _response(tid, _status_text(code, reason), to_path, from_path, msgid_line, b"")


def _reply_status(code: int, reason: str | bytes) -> bytes:
    """_status_text, checked and made once per (code, reason) a route uses: a route answers
    most frames with the same few."""
    if code == 200 and isinstance(reason, str) and reason == "OK":
        return b"200 OK"  # the usual answer: no key tuple made and hashed (issue 16)
    known = _STATUS_TEXTS.get((code, reason))
    if known is None:
        known = _status_text(code, reason)
        # A route making up reasons, or long ones: not kept (64 short texts at most).
        if len(_STATUS_TEXTS) < _STATUS_TEXTS_MAX and len(known) <= _STATUS_TEXT_KEPT:
            _STATUS_TEXTS[code, reason] = known
    return known


def _status_text(code: int, reason: str | bytes) -> bytes:
    """`code` and its comment as the status line ends: b"200 OK", or b"200" for an empty
    reason (RFC 4975 §9 `[SP comment]`).

    Raises:
        LocalProtocolError: the code is not three digits, or the reason holds a control.
    """
    if not 100 <= code <= 999:
        raise LocalProtocolError(f"status code {code} is not three digits")
    comment = reason.encode() if isinstance(reason, str) else reason
    # Printable ASCII (the usual reason) is checked in C without the regex; anything else must
    # be utf8text, RFC 4975 §9 (HTAB and non-ASCII allowed, other controls not).
    if not (comment.isascii() and comment.isalnum()) and not UTF8TEXT.fullmatch(comment):
        raise LocalProtocolError("a reason phrase cannot hold control characters")
    return b"%d %s" % (code, comment) if comment else b"%d" % code


def _response(
    tid: bytes,
    status: bytes,
    to_path: bytes,
    from_path: bytes,
    msgid_line: bytes,
    extra: str | bytes,
) -> bytes:
    lines = _header_lines(extra) if extra else b""
    # One formatting: compiled, the pieces are copied into one new bytes (no tuple, no join).
    return b"MSRP %s %s\r\nTo-Path: %s\r\nFrom-Path: %s\r\n%s%s-------%s$\r\n" % (
        tid,
        status,
        to_path,
        from_path,
        msgid_line,
        lines,
        tid,
    )


def _header_lines(extra: str | bytes) -> bytes:
    lines = extra.encode() if isinstance(extra, str) else extra
    if not lines:
        return b""
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    for line in lines[:-2].split(b"\r\n"):
        if not HEADER_LINE.fullmatch(line):
            raise LocalProtocolError(f"extra header line {line[:40]!r} is malformed")
    return lines


@dataclass(frozen=True, slots=True)
class ReportBasis:
    """What a failure REPORT for a relayed SEND needs, kept small: the SEND itself may be
    megabytes and long gone when the failure is known."""

    to_path: bytes
    """The SEND's From-Path: the REPORT goes back along it (RFC 4975 §7.1.2)."""
    from_path: bytes
    """This relay's URI: the SEND's first To-Path URI."""
    message_id: bytes
    byte_range: bytes


def report_basis(frame: Frame) -> ReportBasis | None:
    """The basis of a failure REPORT for `frame`, or None when none may be sent: not a SEND,
    no Message-ID, or Failure-Report "no" ("yes" is the default, and "partial" asks for
    failure REPORTs too: RFC 4975 §7.1.2, RFC 4976 §6.4.1)."""
    if frame.method != SEND:
        return None
    wanted = frame.header(b"failure-report")
    msgid = frame.message_id
    if msgid is None or (wanted is not None and wanted.strip().lower() not in (b"yes", b"partial")):
        return None
    byte_range = frame.header(b"byte-range") or b"1-*/*"
    return ReportBasis(b" ".join(frame.from_path_raw.split()), frame.first_to, msgid, byte_range)


def build_failure_report(basis: ReportBasis, tid: bytes, code: int, reason: str) -> bytes:
    """A REPORT saying the SEND failed with `code` (RFC 4975 §7.1.2, §9 Status header)."""
    return b"".join(
        (
            b"MSRP %s REPORT\r\nTo-Path: %s\r\nFrom-Path: %s\r\n"
            % (tid, basis.to_path, basis.from_path),
            b"Message-ID: %s\r\nByte-Range: %s\r\n" % (basis.message_id, basis.byte_range),
            b"Status: 000 %d %s\r\n" % (code, reason.encode()),
            DASHES,
            tid,
            b"$\r\n",
        )
    )


def build_request(
    tid: bytes,
    method: bytes,
    to_path: list[str],
    from_path: list[str],
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    flag: bytes = b"$",
) -> bytes:
    """A new request (a REPORT the relay generates, or a test client's SEND).

    `headers` come after From-Path in the order given; with a body, the caller puts
    Content-Type last (RFC 4975 §7.1).

    Raises:
        LocalProtocolError: the body contains this transaction's end-line (RFC 4975 §7.1: pick
            another transaction id), or the flag or a header is malformed.
    """
    if flag not in (b"$", b"+", b"#") or not to_path or not from_path:
        raise LocalProtocolError("a request needs paths and a flag of $, + or #")
    lines = [b"MSRP %s %s\r\n" % (tid, method)]
    lines.append(b"To-Path: %s\r\n" % " ".join(to_path).encode())
    lines.append(b"From-Path: %s\r\n" % " ".join(from_path).encode())
    for name, value in headers or ():
        line = f"{name}: {value}".encode()
        if not HEADER_LINE.fullmatch(line):  # one line each: a CRLF in a value would inject one
            raise LocalProtocolError(f"header {name[:40]!r} is malformed")
        lines.append(line + b"\r\n")
    end_line = DASHES + tid + flag + b"\r\n"
    if body is not None:
        # The blank line's CRLF precedes the body, so a body may not even start with it.
        if b"\r\n" + DASHES + tid in b"\r\n" + body:
            raise LocalProtocolError("the body contains the end-line; use another tid")
        lines.extend((b"\r\n", body, b"\r\n"))
    lines.append(end_line)
    return b"".join(lines)
