"""Incremental MSRP frame reader: bytes in, in any split, events out.

Strategy (h11's ReceiveBuffer, adapted to MSRP framing, RFC 4975 §9 and our checklist §1.9):
- A frame that lies whole and well formed at the start of a read that came with nothing held
  (walked as it came: no copy) or of the buffer is read by the fast path (wholeread.py); this
  state machine reads the rest (partial frames, errors). The corpus tests feed every frame
  whole and byte by byte: both paths give the same events.
- The frame being read starts at offset 0 of one bytearray (consumed bytes are deleted from
  the front, O(1)); what is known of it, read piece by piece, is a PartialFrame (partial.py).
- The head ends at the first blank line (a body follows) or at the first line that starts with
  "-" (a bodiless frame's end-line). A body ends only at CRLF "-------" tid flag CRLF with flag
  one of "$+#" (RFC 4975 §7.1); any other dash line inside a body is body data.
- A body up to `max_body` comes whole inside a Frame. A larger one is streamed: Frame (head),
  BodyPiece..., FrameEnd. While streaming, the tail that could still begin the end-line is held
  back, so a piece never contains part of the end-line; only a tail that does begin it (a
  prefix of CRLF "-------" tid) is held, so the buffer is usually empty after a piece.
- Big bodies are copied as little as possible (issue 16, gather.py).
- Errors: once a transaction id is read, the frame can always be delimited: a grammar error
  (paths that are not lists of MSRP URIs, RFC 4975 §9, included: no Frame carries such paths)
  is an InvalidFrame event, once the frame's end-line is in (a response says the whole chunk
  arrived; only the 413 for a body over the limit goes at once: it asks the sender to stop),
  and reading goes on. Without a transaction id (or with bare-LF framing, or a head over the
  cap) next_event raises RemoteProtocolError: the caller closes, answering first if `tid` is.
- CRLF sequences between frames are skipped, unanswered: MSRP has no keep-alive (Kamailio
  answers a SIP-style CRLF ping with CRLF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

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
from .frame import Frame
from .gather import GATHER_MIN, Gathered, head_bytes, pass_through
from .limits import ReaderLimits
from .partial import FIRST_LINE_SIP, FIRST_LINE_WAITS, PartialFrame
from .readstate import ReaderState
from .sip import sip_message_end
from .status import Status
from .uri import PathCheck
from .wholeread import WholeReads

__all__ = ["Event", "FrameReader", "ReaderState"]

Event = Frame | BodyPiece | FrameEnd | InvalidFrame | SipMessage | ConnectionClosed


# Bound once, as Final (typed, not literal): compiled, each is then a static, where a module
# global or a name imported from another module is a dict lookup on every use.
_HEAD: Final[ReaderState] = ReaderState.HEAD  # in_head's, asked after every read
_ENDLINE: Final[ReaderState] = ReaderState.ENDLINE
_SIP: Final[ReaderState] = ReaderState.SIP
_IDLE: Final[ReaderState] = ReaderState.IDLE  # next_event tests it for every frame
_STREAM: Final[ReaderState] = ReaderState.STREAM  # and receive_data these for every read
_SKIP: Final[ReaderState] = ReaderState.SKIP
_BODY: Final[ReaderState] = ReaderState.BODY
_NEED_DATA: Final[NeedData] = NEED_DATA  # events() and _at_eof return or test it per frame
_DETACHABLE = frozenset({ReaderState.IDLE, ReaderState.HEAD, ReaderState.ENDLINE, ReaderState.BODY})


class FrameReader:
    """Turns a byte stream into MSRP events.

    Use `receive_data(chunk)` (b"" means EOF) and then call `next_event()` until it returns
    NEED_DATA, or iterate `events()`.
    """

    def __init__(self, limits: ReaderLimits | None = None) -> None:
        self.limits = limits or ReaderLimits()
        self._buf = bytearray()
        self._direct: bytes | None = None  # a streamed body's read, as it came
        self._gathered: Gathered | None = None  # a big whole frame's reads after _buf
        self._pieces: list[bytes] = []  # a streamed body's reads before _buf's, last first
        self._eof = False
        self._state = ReaderState.IDLE
        self._paths = PathCheck()
        self._whole = WholeReads(self.limits.max_body, self._paths)  # the fast path
        self._heads = 1
        self._frame = PartialFrame()
        self._readers: dict[ReaderState, Callable[[], Event | NeedData]] = {  # IDLE: next_event
            ReaderState.HEAD: self._read_head,
            ReaderState.ENDLINE: self._read_endline,
            ReaderState.BODY: self._read_body,
            ReaderState.STREAM: self._read_stream,
            ReaderState.SKIP: self._read_skip,
            ReaderState.SIP: self._read_sip,
            ReaderState.CLOSED: self._read_closed,
        }

    # -- public API -------------------------------------------------------------------------
    @property
    def state(self) -> ReaderState:
        return self._state

    @property
    def in_head(self) -> bool:
        """A frame's first line and headers (or a SIP message) have begun and not ended."""
        state = self._state  # by identity: an enum member's hash is a Python call
        return state is _HEAD or state is _ENDLINE or state is _SIP

    @property
    def head_serial(self) -> int:
        """Changes whenever a new head begins: one slow head told from many quick ones."""
        return self._heads

    @property
    def buffered(self) -> int:
        """Bytes held that no event has delivered yet."""
        direct, gathered = self._direct, self._gathered
        held = len(self._buf) + (0 if direct is None else len(direct)) + sum(map(len, self._pieces))
        return held + (0 if gathered is None else gathered.size)

    @property
    def carry_size(self) -> int:
        """How many bytes detach() would return; -1 where it would return None."""
        return -1 if self._eof or self._state not in _DETACHABLE else self.buffered

    def detach(self) -> bytes | None:
        """The bytes held, when a fresh reader fed them would continue exactly where this one
        is: between frames or inside one not delivered yet (IDLE, HEAD, ENDLINE and BODY keep
        the frame from its first byte). None inside a streamed, refused or SIP message, or
        after EOF. Used to move a connection to another worker."""
        if self._eof or self._state not in _DETACHABLE:
            return None
        gathered, direct = self._gathered, self._direct
        held = bytes(self._buf) + (b"" if direct is None else direct)  # a read not looked at yet
        return held + (b"" if gathered is None else b"".join(gathered.reads))

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the connection; b"" means the peer closed it. `data` must be
        bytes, never a buffer its caller reuses: a big body's read is kept as it came."""
        if data:
            if self._eof:
                raise RuntimeError("data after EOF")
            buf, direct = self._buf, self._direct
            if direct is not None:
                self._direct = None
                buf += direct
            state = self._state
            if state is _IDLE:
                if len(buf) != 0:
                    buf += data
                else:
                    self._direct = data  # read as it came by _read_idle's fast path
            elif not buf and (state is _STREAM or state is _SKIP):
                self._direct = data
            elif self._gathered is not None:
                self._gathered.add(data)
            elif state is _BODY and len(buf) >= GATHER_MIN:
                self._gathered = Gathered(data, buf, self._frame.marker)
            else:
                buf += data
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """Return the next event, or NEED_DATA.

        Raises:
            RemoteProtocolError: the stream cannot be read any further. `exc.tid` is set when
                the frame at fault can still be answered (with `exc.status`) before closing.
        """
        try:
            if self._state is _IDLE:  # the usual case, without the table lookup
                return self._read_idle()
            return self._readers[self._state]()
        except LocalProtocolError as exc:
            self._state = ReaderState.CLOSED
            head = bytes(self._buf[: self.limits.max_head])
            raise exc.as_remote(self._frame.tid or None, head) from None

    def events(self) -> Iterator[Event]:
        """Yield events until more data is needed (or the connection is closed)."""
        while True:
            event = self.next_event()
            if event is _NEED_DATA:
                return
            yield event
            if isinstance(event, ConnectionClosed):
                return

    # -- between frames ---------------------------------------------------------------------
    def _read_idle(self) -> Event | NeedData:
        buf, direct, whole = self._buf, self._direct, self._whole
        tried = False  # the fast path has seen the buffer's bytes as they are
        if direct is not None:
            # A read that came with nothing held: the usual one holds a whole frame, read in
            # place (a read that is exactly one frame becomes its bytes), else it is held.
            self._direct = None
            frame = whole.in_read(direct)
            if frame is not None:
                end = len(frame.buf)
                if end < len(direct):
                    buf += memoryview(direct)[end:]
                return whole.checked(frame)
            buf += direct
            tried = True
        elif len(buf) == 0:
            return self._at_eof(None)
        if buf[0] in (13, 10):  # CRLFs between frames: skipped (a frame starts "MSRP ")
            del buf[: len(buf) - len(buf.lstrip(b"\r\n"))]
            if len(buf) == 0:
                return self._at_eof(None)
            tried = False
        if not tried:
            frame = whole.in_buffer(buf)  # a frame, whole, and nothing before it
            if frame is not None:
                del buf[: len(frame.buf)]
                return whole.checked(frame)
        self._heads += 1
        self._frame = PartialFrame()
        self._state = ReaderState.HEAD
        return self._read_head()

    def _read_closed(self) -> Event | NeedData:
        raise LocalProtocolError("the connection is closed")

    def _at_eof(self, tid: bytes | None) -> Event | NeedData:
        if not self._eof:
            return _NEED_DATA
        if self._state in (ReaderState.IDLE, ReaderState.CLOSED) and not self._buf:
            self._state = ReaderState.CLOSED
            return ConnectionClosed()
        raise LocalProtocolError("connection closed in the middle of a frame", tid=tid)

    # -- head -------------------------------------------------------------------------------
    def _read_head(self) -> Event | NeedData:
        frame = self._frame
        if frame.fl_end < 0:
            first = frame.read_first_line(self._buf, self.limits.max_head)
            if first == FIRST_LINE_WAITS:
                return self._at_eof(None)
            if first == FIRST_LINE_SIP:
                self._state = ReaderState.SIP
        if self._state is ReaderState.SIP:
            return self._read_sip()
        buf = self._buf
        blank = frame.blank.run(buf, len(buf))
        dash = frame.dash.run(buf, len(buf) if blank < 0 else blank + 2)  # not a big body
        if dash >= 0 and (blank < 0 or dash < blank):
            self._state = ReaderState.ENDLINE  # bodiless: the end-line starts at dash + 2
            return self._read_endline()
        if blank >= 0:
            return self._head_with_body(blank)
        return self._head_incomplete()

    def _head_incomplete(self) -> NeedData | Event:
        if len(self._buf) > self.limits.max_head:
            raise LocalProtocolError(
                f"header block exceeds {self.limits.max_head} bytes", tid=self._frame.tid
            )
        return self._at_eof(self._frame.tid)

    # -- frames without a body ---------------------------------------------------------------
    def _read_endline(self) -> Event | NeedData:
        buf = self._buf
        frame = self._frame
        start = frame.dash.found + 2
        lf = buf.find(b"\n", start)
        if lf < 0:
            return self._head_incomplete()  # wait for the line's LF, within max_head
        end = lf + 1
        invalid = frame.check_head(buf, start, self._paths)
        if invalid is None and not frame.is_endline(buf, start, end):
            # No header name starts with "-" (RFC 4975 §9): this line was meant as the
            # end-line, so the frame ends here, refused.
            invalid = frame.refuse(buf, start, "malformed end-line (RFC 4975 §7.1)")
        if invalid is not None:
            return self._consume(end, invalid)
        flag = bytes(buf[end - 3 : end - 2])
        return self._consume(end, frame.make_frame(bytes(buf[:end]), -1, start, flag, start))

    def _consume(self, end: int, event: Event) -> Event:
        del self._buf[:end]
        self._state = ReaderState.IDLE
        return event

    # -- frames with a body ------------------------------------------------------------------
    def _head_with_body(self, blank: int) -> Event | NeedData:
        frame = self._frame
        hdr_end = blank + 2
        invalid = frame.check_head(self._buf, hdr_end, self._paths)
        # The body starts after the blank line. The end-line search starts at the blank line's
        # own CRLF, so that "headers, blank line, end-line" reads as an empty body.
        frame.body_start = blank + 4
        frame.scan = hdr_end
        if invalid is not None:
            # Refused, but answered only once its end-line is in: a response says the whole
            # chunk was received (RFC 4976 §6.4.1), and a sender may read only after writing it.
            self._start_rest(ReaderState.SKIP, hdr_end, invalid)
            frame.refused = invalid
            return self._read_skip()
        self._state = ReaderState.BODY
        return self._read_body()

    def _read_body(self) -> Event | NeedData:
        buf = self._buf
        frame = self._frame
        body_start = frame.body_start
        found = frame.find_end(buf)
        gathered = self._gathered
        if gathered is not None:
            if found < 0 and frame.scan - body_start <= self.limits.max_body:
                whole = gathered.frame(buf, frame, self.limits.max_body)
                if whole is True:
                    return self._at_eof(frame.tid)
                if whole is not False:
                    self._gathered = None
                    return self._consume(0, whole)  # the buffer holds what follows it
                if self.limits.stream_large and gathered.drainable(frame.marker):
                    head = frame.make_frame(bytes(buf[:body_start]), body_start, -1, None)
                    self._pieces = gathered.drain(buf, body_start, frame.marker)[::-1]
                    self._gathered, frame.scan, self._state = None, 0, _STREAM
                    return head
            self._gathered = None
            gathered.flatten(buf)
            found = frame.find_end(buf)
        # Bytes before `scan` are certainly data, so the choice does not depend on the split.
        if frame.scan - body_start <= self.limits.max_body:
            if found < 0:
                return self._at_eof(frame.tid)
            flag = bytes(buf[found - 3 : found - 2])
            whole = frame.make_frame(head_bytes(buf, found), body_start, frame.scan + 2, flag)
            return self._consume(found, whole)
        if not self.limits.stream_large:
            reason = f"body exceeds {self.limits.max_body} bytes"
            invalid = frame.refuse(buf, body_start - 2, reason, Status.STOP_SENDING)
            return self._start_rest(ReaderState.SKIP, body_start, invalid)
        head = frame.make_frame(bytes(buf[:body_start]), body_start, -1, None)
        return self._start_rest(ReaderState.STREAM, body_start, head)

    def _start_rest(self, state: ReaderState, cut: int, event: Event) -> Event:
        """Deliver `event` and read the rest of the frame after `cut` in `state`."""
        del self._buf[:cut]
        self._frame.scan = max(0, self._frame.scan - cut)
        self._state = state
        return event

    # -- streamed and skipped bodies ---------------------------------------------------------
    def _read_stream(self) -> Event | NeedData:
        return self._read_rest(keep=True)

    def _read_skip(self) -> Event | NeedData:
        while True:
            event = self._read_rest(keep=False)
            if not isinstance(event, BodyPiece):
                return event

    def _read_rest(self, keep: bool) -> Event | NeedData:
        buf, frame, direct = self._buf, self._frame, self._direct
        if self._pieces:  # a streamed frame's first reads, kept apart (_read_body)
            return BodyPiece(self._pieces.pop())
        if direct is not None:
            self._direct = None
            piece = pass_through(direct, frame.marker, buf)
            if piece is not None:
                return piece
        found = frame.find_end(buf)
        safe = frame.scan
        if safe > 0:
            piece = BodyPiece(head_bytes(buf, safe))
            del buf[:safe]
            frame.scan = 0
            return piece
        if found < 0:
            return self._at_eof(frame.tid)
        end = FrameEnd(frame.tid, bytes(buf[found - 3 : found - 2]), bytes(buf[:found]))
        self._consume(found, end)
        if keep:
            return end
        refused, frame.refused = frame.refused, None
        return refused if refused is not None else self._read_idle()

    # -- SIP on the MSRP port ----------------------------------------------------------------
    def _read_sip(self) -> Event | NeedData:
        end, self._frame.scan = sip_message_end(self._buf, self._frame.scan)
        if end < 0:
            if len(self._buf) > self.limits.max_sip or end == -2:
                raise LocalProtocolError("SIP message too large or without a valid length")
            return self._at_eof(None)
        return self._consume(end, SipMessage(bytes(self._buf[:end])))
