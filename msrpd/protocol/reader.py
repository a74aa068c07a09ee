"""Incremental MSRP frame reader: bytes in, in any split, events out.

Strategy (h11's ReceiveBuffer, adapted to MSRP framing, RFC 4975 §9 and our checklist §1.9):
- A frame that lies complete and well formed in the buffer is read by fastpath.py in one regex
  match; this state machine reads everything else (partial frames, errors). The corpus tests
  feed every frame whole and byte by byte, so both paths are held to the same events.
- The frame being read always starts at offset 0 of one bytearray; consumed bytes are deleted
  from the front (CPython does that in O(1)).
- Each search remembers where it stopped (`_scan`, `_blank`, `_dash`), so input that arrives
  one byte at a time costs O(n) in total.
- The head ends at the first blank line (a body follows) or at the first line that starts with
  "-" (a bodiless frame's end-line). A body ends only at CRLF "-------" tid flag CRLF with flag
  one of "$+#" (RFC 4975 §7.1); any other dash line inside a body is body data.
- A body up to `max_body` comes whole inside a Frame. A larger one is streamed: Frame (head),
  BodyPiece..., FrameEnd. While streaming, the tail that could still begin the end-line is held
  back, so a piece never contains part of the end-line.
- Errors: once a transaction id is read, the frame can always be delimited, so grammar errors
  give an InvalidFrame event (for a frame with a body, once its end-line is in: an answer says
  the whole chunk arrived; only the 413 for a body over the limit goes at once, as it asks the
  sender to stop) and reading goes on. A To-Path or From-Path that is not a list of
  MSRP URIs (RFC 4975 §9) is such an error: no Frame ever carries paths that do not parse, so
  nothing that reads them later can fail on them (checked once per frame; PathCheck makes a
  session's repeated paths cost a comparison). Without a transaction id (or with bare-LF
  framing, or a head over the cap) the stream cannot be trusted any more: next_event raises
  RemoteProtocolError and the caller closes the connection, answering first if `tid` is set.
- CRLF sequences between frames are skipped and answered with nothing: MSRP has no keep-alive
  (Kamailio answers a SIP-style CRLF ping with CRLF; an MSRP client has no use for that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from enum import Enum

from .errors import LocalProtocolError
from .events import (
    NEED_DATA,
    BodyPiece,
    ConnectionClosed,
    FrameEnd,
    InvalidFrame,
    NeedData,
    SipMessage,
)
from .fastpath import path_span, read_whole_frame
from .frame import Frame
from .grammar import (
    DASHES,
    FIRST_LINE,
    HEAD,
    RESPONSE_HINT,
    SIP_START,
    TID_PREFIX,
    closes_end_line,
    diagnose_head,
)
from .limits import ReaderLimits
from .sip import sip_message_end
from .status import Status
from .uri import PathCheck

__all__ = ["Event", "FrameReader", "ReaderState"]

Event = Frame | BodyPiece | FrameEnd | InvalidFrame | SipMessage | ConnectionClosed

_MSRP = b"MSRP "


class ReaderState(Enum):
    IDLE = "idle"  # between frames
    HEAD = "head"  # first line and headers
    ENDLINE = "endline"  # a bodiless frame's end-line is arriving
    BODY = "body"  # body of a frame that may still come whole
    STREAM = "stream"  # body of a streamed frame
    SKIP = "skip"  # body of a frame already refused
    SIP = "sip"  # a SIP message on the MSRP port
    CLOSED = "closed"  # EOF seen and reported, or a fatal error raised


# A frame head (or a SIP message) is arriving: the caller bounds how long that may take.
_HEAD_STATES = frozenset({ReaderState.HEAD, ReaderState.ENDLINE, ReaderState.SIP})
_DETACHABLE = frozenset({ReaderState.IDLE, ReaderState.HEAD, ReaderState.ENDLINE, ReaderState.BODY})


class FrameReader:
    """Turns a byte stream into MSRP events.

    Use `receive_data(chunk)` (b"" means EOF) and then call `next_event()` until it returns
    NEED_DATA, or iterate `events()`.
    """

    def __init__(self, limits: ReaderLimits | None = None) -> None:
        self.limits = limits or ReaderLimits()
        self._buf = bytearray()
        self._eof = False
        self._state = ReaderState.IDLE
        self._blank = _Search(b"\r\n\r\n")
        self._dash = _Search(b"\r\n-")
        self._paths = PathCheck()
        self._heads = 0
        self._readers: dict[ReaderState, Callable[[], Event | NeedData]] = {
            ReaderState.IDLE: self._read_idle,
            ReaderState.HEAD: self._read_head,
            ReaderState.ENDLINE: self._read_endline,
            ReaderState.BODY: self._read_body,
            ReaderState.STREAM: self._read_stream,
            ReaderState.SKIP: self._read_skip,
            ReaderState.SIP: self._read_sip,
            ReaderState.CLOSED: self._read_closed,
        }
        self._start_frame()

    def _start_frame(self) -> None:
        self._heads += 1
        self._scan = 0
        self._blank.reset()
        self._dash.reset()
        self._fl_end = -1
        self._body_start = -1
        self._tid = b""
        self._marker = b""
        self._line: re.Match[bytes] | None = None
        self._response = False
        self._spans = ((0, 0, 0), (0, 0, 0))
        self._error = ""
        self._refused: InvalidFrame | None = None

    # -- public API -------------------------------------------------------------------------
    @property
    def state(self) -> ReaderState:
        return self._state

    @property
    def in_head(self) -> bool:
        """A frame's first line and headers (or a SIP message) have begun and not ended. A
        body is not a head: it may take as long as it takes."""
        return self._state in _HEAD_STATES

    @property
    def head_serial(self) -> int:
        """Changes whenever a new head begins: tells one slow head from a series of quick ones
        that each end a read half-way."""
        return self._heads

    @property
    def buffered(self) -> int:
        """Bytes held that no event has delivered yet."""
        return len(self._buf)

    def detach(self) -> bytes | None:
        """The bytes held, when a fresh reader fed them would continue exactly where this one
        is: between frames or inside one not delivered yet (IDLE, HEAD, ENDLINE and BODY keep
        the frame from its first byte). None inside a streamed, refused or SIP message, or
        after EOF. Used to move a connection to another worker."""
        if self._eof or self._state not in _DETACHABLE:
            return None
        return bytes(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the connection; b"" means the peer closed it."""
        if data:
            if self._eof:
                raise RuntimeError("data after EOF")
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """Return the next event, or NEED_DATA.

        Raises:
            RemoteProtocolError: the stream cannot be read any further. `exc.tid` is set when
                the frame at fault can still be answered (with `exc.status`) before closing.
        """
        try:
            if self._state is ReaderState.IDLE:  # the usual case, without the table lookup
                return self._read_idle()
            return self._readers[self._state]()
        except LocalProtocolError as exc:
            self._state = ReaderState.CLOSED
            head = bytes(self._buf[: self.limits.max_head])
            raise exc.as_remote(self._tid or None, head) from None

    def events(self) -> Iterator[Event]:
        """Yield events until more data is needed (or the connection is closed)."""
        while True:
            event = self.next_event()
            if event is NEED_DATA:
                return
            yield event
            if isinstance(event, ConnectionClosed):
                return

    # -- between frames ---------------------------------------------------------------------
    def _read_idle(self) -> Event | NeedData:
        buf = self._buf
        if buf and buf[0] in (13, 10):
            skip = len(buf) - len(buf.lstrip(b"\r\n"))
            del buf[:skip]
        if not buf:
            return self._at_eof(None)
        frame = read_whole_frame(self._buf, self.limits.max_body)
        if frame is not None:
            del self._buf[: len(frame.buf)]
            problem = self._paths.problem(frame.buf, frame.to_span, frame.from_span)
            if problem is None:
                return frame
            head = frame.buf[: frame.hdr_end]
            return InvalidFrame(frame.tid, Status.UNINTELLIGIBLE, problem, frame.is_request, head)
        self._start_frame()
        self._state = ReaderState.HEAD
        return self._read_head()

    def _read_closed(self) -> Event | NeedData:
        raise LocalProtocolError("the connection is closed")

    def _at_eof(self, tid: bytes | None) -> Event | NeedData:
        if not self._eof:
            return NEED_DATA
        if self._state in (ReaderState.IDLE, ReaderState.CLOSED) and not self._buf:
            self._state = ReaderState.CLOSED
            return ConnectionClosed()
        raise LocalProtocolError("connection closed in the middle of a frame", tid=tid)

    # -- head -------------------------------------------------------------------------------
    def _read_head(self) -> Event | NeedData:
        if self._fl_end < 0 and not self._read_first_line():
            return self._at_eof(None)
        if self._state is ReaderState.SIP:
            return self._read_sip()
        buf = self._buf
        blank = self._blank.run(buf)
        dash = self._dash.run(buf)
        if dash >= 0 and (blank < 0 or dash < blank):
            self._state = ReaderState.ENDLINE  # bodiless: the end-line starts at dash + 2
            return self._read_endline()
        if blank >= 0:
            return self._head_with_body(blank)
        return self._head_incomplete()

    def _head_incomplete(self) -> NeedData | Event:
        if len(self._buf) > self.limits.max_head:
            raise LocalProtocolError(
                f"header block exceeds {self.limits.max_head} bytes", tid=self._tid
            )
        return self._at_eof(self._tid)

    def _read_first_line(self) -> bool:
        """Read the first line if it has arrived; say whether it had."""
        buf = self._buf
        lf = buf.find(b"\n", self._scan)
        if lf < 0:
            self._scan = len(buf)
            self._check_prefix()
            return False
        if not buf.startswith(_MSRP):
            if SIP_START.fullmatch(buf, 0, max(lf - 1, 0)) and buf[lf - 1] == 13:
                self._state = ReaderState.SIP
                self._scan = lf - 1
                return True
            raise LocalProtocolError("not an MSRP frame")
        if buf[lf - 1] != 13:
            prefix = TID_PREFIX.match(buf)
            tid = prefix[1] if prefix else None
            raise LocalProtocolError("line ends in a bare LF (RFC 4975 §9 needs CRLF)", tid=tid)
        self._parse_first_line(lf - 1)
        return True

    def _check_prefix(self) -> None:
        buf = self._buf
        if len(buf) > self.limits.max_head:
            raise LocalProtocolError(f"first line exceeds {self.limits.max_head} bytes")
        head = bytes(buf[:5])
        # Still possibly "MSRP " or a SIP start line (upper-case method or "SIP/2.0").
        if not (_MSRP.startswith(head) or head.startswith(_MSRP) or head[:1].isupper()):
            raise LocalProtocolError("not an MSRP frame")

    def _parse_first_line(self, end: int) -> None:
        buf = self._buf
        m = FIRST_LINE.fullmatch(buf, 0, end)
        if m is None:
            prefix = TID_PREFIX.match(buf, 0, end)
            if prefix is None:
                raise LocalProtocolError("unreadable transaction id in the first line")
            tid = prefix[1]
            self._response = RESPONSE_HINT.match(buf, 0, end) is not None
            self._error = "malformed first line (RFC 4975 §9)"
        else:
            tid = m[1]
            self._line = m
            self._response = m[2] is not None
        self._tid = bytes(tid)
        self._marker = b"\r\n" + DASHES + self._tid
        self._fl_end = end
        self._blank.scan = self._dash.scan = end

    def _refuse(
        self, hdr_end: int, reason: str, status: Status = Status.UNINTELLIGIBLE
    ) -> InvalidFrame:
        head = bytes(self._buf[:hdr_end])
        return InvalidFrame(self._tid, status, reason, not self._response, head)

    def _check_head(self, hdr_end: int) -> InvalidFrame | None:
        """Check the first line and header block; record the path spans when they are good."""
        if self._error:
            return self._refuse(hdr_end, self._error)
        m = HEAD.fullmatch(self._buf, self._fl_end + 2, hdr_end)
        if m is None:
            block = bytes(self._buf[self._fl_end + 2 : hdr_end])
            return self._refuse(hdr_end, diagnose_head(block))
        buf = self._buf
        self._spans = (
            path_span(buf, m.start(1), m.end(2), m.end(1)),
            path_span(buf, m.start(3), m.end(4), m.end(3)),
        )
        problem = self._paths.problem(buf, *self._spans)
        return None if problem is None else self._refuse(hdr_end, problem)

    # -- frames without a body ---------------------------------------------------------------
    def _read_endline(self) -> Event | NeedData:
        buf = self._buf
        start = self._dash.found + 2
        lf = buf.find(b"\n", start)
        if lf < 0:
            return self._head_incomplete()  # wait for the line's LF, within max_head
        end = lf + 1
        invalid = self._check_head(start)
        if invalid is None and not _is_endline(buf, start, end, self._marker):
            # No header name starts with "-" (RFC 4975 §9): this line was meant as the
            # end-line, so the frame ends here, refused.
            invalid = self._refuse(start, "malformed end-line (RFC 4975 §7.1)")
        if invalid is not None:
            return self._consume(end, invalid)
        flag = bytes(buf[end - 3 : end - 2])
        return self._consume(end, self._make_frame(bytes(buf[:end]), -1, start, flag, start))

    def _consume(self, end: int, event: Event) -> Event:
        del self._buf[:end]
        self._state = ReaderState.IDLE
        return event

    # -- frames with a body ------------------------------------------------------------------
    def _head_with_body(self, blank: int) -> Event | NeedData:
        hdr_end = blank + 2
        invalid = self._check_head(hdr_end)
        # The body starts after the blank line. The end-line search starts at the blank line's
        # own CRLF, so that "headers, blank line, end-line" reads as an empty body.
        self._body_start = blank + 4
        self._scan = hdr_end
        if invalid is not None:
            # Refused, but answered only once its end-line is in: a response says the whole
            # chunk was received (RFC 4976 §6.4.1), and a sender may read only after writing it.
            self._start_rest(ReaderState.SKIP, hdr_end, invalid)
            self._refused = invalid
            return self._read_skip()
        self._state = ReaderState.BODY
        return self._read_body()

    def _read_body(self) -> Event | NeedData:
        buf = self._buf
        body_start = self._body_start
        found = self._find_end(buf)
        # Bytes before _scan are certainly data, so the choice does not depend on the split.
        if self._scan - body_start <= self.limits.max_body:
            if found < 0:
                return self._at_eof(self._tid)
            flag = bytes(buf[found - 3 : found - 2])
            frame = self._make_frame(bytes(buf[:found]), body_start, self._scan + 2, flag)
            return self._consume(found, frame)
        if not self.limits.stream_large:
            reason = f"body exceeds {self.limits.max_body} bytes"
            invalid = self._refuse(body_start - 2, reason, Status.STOP_SENDING)
            return self._start_rest(ReaderState.SKIP, body_start, invalid)
        head = self._make_frame(bytes(buf[:body_start]), body_start, -1, None)
        return self._start_rest(ReaderState.STREAM, body_start, head)

    def _start_rest(self, state: ReaderState, cut: int, event: Event) -> Event:
        """Deliver `event` and read the rest of the frame after `cut` in `state`."""
        del self._buf[:cut]
        self._scan = max(0, self._scan - cut)
        self._state = state
        return event

    def _find_end(self, buf: bytearray) -> int:
        """Search for CRLF "-------" tid flag CRLF from `_scan`. Return the index just past the
        end-line (then `_scan` is where its CRLF starts), or -1 (then `_scan` is where the
        search resumes, and nothing before it can be part of the end-line)."""
        marker = self._marker
        size = len(marker)
        while True:
            at = buf.find(marker, self._scan)
            if at < 0:
                self._scan = max(self._scan, len(buf) - size + 1)
                return -1
            end = at + size + 3
            if end > len(buf):
                self._scan = at  # the flag and CRLF have not arrived yet
                return -1
            if closes_end_line(buf, end):
                self._scan = at
                return end
            self._scan = at + 1

    def _make_frame(
        self, buf: bytes, body_start: int, end_start: int, flag: bytes | None, hdr_end: int = -1
    ) -> Frame:
        m = self._line
        assert m is not None  # _check_head passed, so the first line matched
        code = m[2]
        to_span, from_span = self._spans
        return Frame(
            buf,
            self._tid,
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

    # -- streamed and skipped bodies ---------------------------------------------------------
    def _read_stream(self) -> Event | NeedData:
        return self._read_rest(keep=True)

    def _read_skip(self) -> Event | NeedData:
        while True:
            event = self._read_rest(keep=False)
            if not isinstance(event, BodyPiece):
                return event

    def _read_rest(self, keep: bool) -> Event | NeedData:
        buf = self._buf
        found = self._find_end(buf)
        safe = self._scan
        if safe > 0:
            piece = BodyPiece(bytes(buf[:safe]))
            del buf[:safe]
            self._scan = 0
            return piece
        if found < 0:
            return self._at_eof(self._tid)
        end = FrameEnd(self._tid, bytes(buf[found - 3 : found - 2]), bytes(buf[:found]))
        self._consume(found, end)
        if keep:
            return end
        refused, self._refused = self._refused, None
        return refused if refused is not None else self._read_idle()

    # -- SIP on the MSRP port ----------------------------------------------------------------
    def _read_sip(self) -> Event | NeedData:
        end, self._scan = sip_message_end(self._buf, self._scan)
        if end < 0:
            if len(self._buf) > self.limits.max_sip or end == -2:
                raise LocalProtocolError("SIP message too large or without a valid length")
            return self._at_eof(None)
        return self._consume(end, SipMessage(bytes(self._buf[:end])))


class _Search:
    """A search for `needle` that resumes where the last attempt stopped."""

    __slots__ = ("found", "needle", "scan")

    def __init__(self, needle: bytes) -> None:
        self.needle = needle
        self.found = -1
        self.scan = 0

    def reset(self) -> None:
        self.found = -1
        self.scan = 0

    def run(self, buf: bytearray) -> int:
        if self.found < 0:
            self.found = buf.find(self.needle, self.scan)
            if self.found < 0:
                self.scan = max(self.scan, len(buf) - len(self.needle) + 1)
        return self.found


def _is_endline(buf: bytearray, start: int, end: int, marker: bytes) -> bool:
    """Whether buf[start:end] is "-------" tid flag CRLF (RFC 4975 §9 end-line)."""
    return (
        end - start == len(marker) + 1
        and buf.startswith(marker[2:], start)
        and closes_end_line(buf, end)
    )
