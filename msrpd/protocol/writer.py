"""Frame writers: replies, the relay splice, new requests.

Rules:
- `build_reply` lays a response out exactly as Kamailio's msrp_reply (reference §7): first
  line, To-Path, From-Path, the request's Message-ID line as received, extra headers, end-line
  with flag "$". Where Kamailio is wrong we follow the RFC: the To-Path of a response to a
  non-SEND request is the whole From-Path (RFC 4975 §7.2; Kamailio copies only the first
  URI), paths come from the parsed URIs so trailing blanks never leak into a line, and an empty
  reason gives `MSRP tid 200` without a trailing space (RFC 4975 §9 `[SP comment]`).
- `relay_splice` is Kamailio's msrp_relay rewrite (reference §6.2, RFC 4976 §6.2): the first
  To-Path URI moves to the front of From-Path; every other byte, the header order and the body
  stay as received. It cuts at the parsed value offsets, so `From-Path:<uri>` (no space) keeps
  every character (Kamailio drops one). A defined header name not in canonical case is
  written in it (canonical_buf; rfc-checklist §6 case 8a); extension headers stay as spelled.
- Writers never read clocks or randomness: transaction ids come from the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import LocalProtocolError, MsrpProtocolError
from .events import InvalidFrame
from .frame import SEND, Frame
from .grammar import DASHES, HEADER_LINE, UTF8TEXT
from .hnames import canonical_head
from .uri import path_problem

__all__ = [
    "ReportBasis",
    "Spliced",
    "build_error_reply",
    "build_failure_report",
    "build_invalid_reply",
    "build_reply",
    "build_request",
    "build_response",
    "canonical_buf",
    "forward_paths",
    "invalid_gets_reply",
    "relay_pieces",
    "relay_splice",
    "report_basis",
    "retarget",
]

_SLICE_MAX: Final = 4096
"""Frames up to this size are relayed from slices of their bytes, larger ones from views."""
PIECES_MIN: Final = 64 * 1024
"""Frames from this size on are relayed as their new head and a view of the rest (Spliced):
copying them whole again would cost more than a second piece to write (issue 16)."""
_BLANKS = b" \t"
# Bare-LF lines too: a frame refused for its LF line endings is still answered (DESIGN §8).
_PATH_LINE = re.compile(rb"^(to-path|from-path)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)
_RESPONSE_LINE = re.compile(rb"MSRP [^ \r\n]+ [0-9]{3}(?:[ \r\n]|$)")
_STATUS_TEXTS: Final[dict[tuple[int, str | bytes], bytes]] = {}  # _reply_status's
_STATUS_TEXTS_MAX: Final = 64
_STATUS_TEXT_KEPT: Final = 128  # bytes
_RFC_NOTE = re.compile(r"\s*\(RFC [^)]*\)")
_METHOD = re.compile(rb"MSRP [^ \r\n]+ ([^ \r\n]+)")
_FAILURE_REPORT_NO = re.compile(rb"^failure-report[ \t]*:[ \t]*no[ \t]*\r?$", re.I | re.M)


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
        return buf[at + 2 : buf.index(b"\r\n", at + 14) + 2]
    return frame.message_id_line() or b""


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
    while buf[rest] in _BLANKS:
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
