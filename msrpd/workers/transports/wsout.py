"""OutFrames: the MSRP bytes a connection writes toward a WebSocket client, as WebSocket
messages: one MSRP chunk per message (RFC 7977 §5.1), re-chunking a SEND too big for one
message (sans-IO).

Rules:
- The input is a stream of MSRP frames: whole ones, or a streamed frame's head and pieces,
  in writes that may hold several frames or part of one. A frame ends at its end-line
  (`-------tid` flag CRLF, RFC 4975 §7.1, which a body never contains), found here; bytes
  that may begin an end-line are held until the next write tells.
- A frame whole in one write and within `max_message` is one message (`whole`: the caller
  may send it as text). Otherwise its bytes go out as they come, as fragments of one
  message, the last ending with its end-line.
- A SEND with a Byte-Range that would exceed `max_message` is re-chunked (RFC 4975 §7.1,
  §7.1.1; RFC 7977 §5.1: the relay MUST chunk for the WebSocket side): where a message is
  full, its chunk is interrupted with a `+` end-line, and the body goes on in a new chunk:
  the same head (so the same Message-ID and paths) with a new transaction id and Byte-Range
  `next-*/total` (a chunk that may be interrupted has range-end `*`; the first chunk's head
  is the sender's, and a receiver counts what it got, RFC 4975 §7.1.1; protocol/rechunk.py
  builds the head). The last chunk ends with the frame's own flag. The new id comes from
  `new_tid`: under the relay route each added chunk is a transaction of the SEND's sender
  (txchunks.py), so its answer is matched and a failure reported.
- Other frames (responses, REPORTs, a SEND without Byte-Range) are never re-chunked.
"""

from __future__ import annotations

from collections.abc import Callable

from ...protocol.rechunk import Continuation, continuation

__all__ = ["NewTid", "OutFrames", "Piece"]

Piece = tuple[bytes, bool, bool]
"""(payload, ends its message, is a whole frame in one message)."""
NewTid = Callable[[bytes, int], bytes]
"""(the interrupted chunk's transaction id, its body bytes) -> the next chunk's id."""

_DASHES = b"-------"
_FLAGS = b"$+#"
_MIN_ROOM = 256  # a head that leaves less room than this in a message: not re-chunked


class OutFrames:
    __slots__ = (
        "ends",
        "fragmented",
        "marker",
        "max_message",
        "message_len",
        "new_tid",
        "start",
        "tail",
        "template",
        "tid",
    )

    def __init__(self, max_message: int, new_tid: NewTid) -> None:
        self.max_message = max_message
        self.new_tid = new_tid
        """The transaction id of a chunk that re-chunking adds, given the interrupted
        chunk's id and its body bytes (a transaction of its own, txchunks.py)."""
        self.marker = b""
        """Writing a frame: its end-line's start (CRLF, dashes, tid); b"" between frames."""
        self.tail = b""
        """Bytes held back: a head not whole yet, or what may begin the end-line."""
        self.fragmented = False
        """The current message has begun as fragments."""
        self.message_len = 0
        self.template: Continuation | None = None
        """Re-chunking the current frame."""
        self.start = 0
        """The Byte-Range position the current chunk's body starts at."""
        self.tid = b""
        """The transaction id of the chunk being written (a new one per re-chunk)."""
        self.ends: list[tuple[int, int]] = []
        """Of the last split, for each frame it ended: (the index of the piece that ends it,
        the offset in the data just past it); what was delivered is counted by frames."""

    def split(self, data: bytes | memoryview) -> list[Piece]:
        base = len(self.tail)  # buf[base:] is data
        buf = self.tail + data if self.tail else bytes(data)
        out: list[Piece] = []
        ends = self.ends
        ends.clear()
        pos, size = 0, len(buf)
        while pos < size:
            search = pos
            if not self.marker:
                search = self._begin(buf, pos, out)
                if search < 0:
                    break
                if search > pos and self.template is not None:
                    pos = search  # the head went out as the first chunk's start
            end, hold = _frame_end(buf, self.marker, search)
            if self.template is not None:
                pos = self._chunked(buf, pos, end, hold, out)
                if end < 0:
                    break
                ends.append((len(out) - 1, end - base))
                continue
            if end < 0:
                self._piece(out, buf[pos:hold], False)
                pos = hold
                break
            frame = buf[pos:end]
            if self.fragmented:
                self._piece(out, frame, True)
            else:
                out.append((frame, True, True))
            ends.append((len(out) - 1, end - base))
            self._reset()
            pos = end
        self.tail = buf[pos:]
        return out

    def _begin(self, buf: bytes, pos: int, out: list[Piece]) -> int:
        """Start the frame at `pos`: where to look for its end-line from, or -1 to wait for
        more. A SEND to re-chunk has its head sent now, and its body starts at the result."""
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        parts = buf[pos:eol].split(b" ", 2)  # MSRP SP tid SP method (RFC 4975 §9)
        tid = parts[1] if len(parts) > 1 else b""
        marker = b"\r\n" + _DASHES + tid
        search = eol
        end, _ = _frame_end(buf, marker, eol)
        if len(parts) == 3 and parts[2] == b"SEND" and not 0 <= end - pos <= self.max_message:
            blank = buf.find(b"\r\n\r\n", eol)
            if blank < 0 and end < 0:
                return -1  # its head is not all here yet
            if blank >= 0 and not 0 <= end < blank:  # it has a body
                head = buf[pos : blank + 4]
                template = continuation(head)
                if template is not None and self.max_message - len(head) - len(tid) >= _MIN_ROOM:
                    self.template = template
                    self.start = template.offset
                    self._piece(out, head, False)
                    search = blank + 4
        self.tid, self.marker = tid, marker
        return search

    def _chunked(self, buf: bytes, pos: int, end: int, hold: int, out: list[Piece]) -> int:
        """Send the body bytes from `pos` up to the end-line (`end`) or `hold`, starting a
        new chunk wherever a message is full; returns where the unsent bytes start."""
        template = self.template
        assert template is not None
        stop = end - len(self.marker) - 3 if end >= 0 else hold
        while True:
            # what is left once the end-line (CRLF, dashes, tid, flag, CRLF) is counted
            room = self.max_message - self.message_len - len(self.tid) - 12
            if stop - pos <= room:
                break
            self._piece(out, buf[pos : pos + room], False)
            template.offset += room
            pos += room
            self._piece(out, b"\r\n" + _DASHES + self.tid + b"+\r\n", True)  # interrupted
            self.tid = self.new_tid(self.tid, template.offset - self.start)
            self.start = template.offset
            self._piece(out, template.head(self.tid), False)
        if stop > pos:
            self._piece(out, buf[pos:stop], False)
            template.offset += stop - pos
        if end < 0:
            return stop
        flag = buf[end - 3 : end - 2]
        self._piece(out, b"\r\n" + _DASHES + self.tid + flag + b"\r\n", True)
        self._reset()
        return end

    def _piece(self, out: list[Piece], data: bytes, last: bool) -> None:
        if data or last:
            out.append((data, last, False))
        self.fragmented = not last
        self.message_len = 0 if last else self.message_len + len(data)

    def _reset(self) -> None:
        self.marker, self.template, self.fragmented, self.message_len = b"", None, False, 0


def _frame_end(buf: bytes, marker: bytes, start: int) -> tuple[int, int]:
    """(the end of the frame whose end-line starts with `marker`, -1) when `buf` holds its
    end-line from `start` on; else (-1, where the bytes that might begin it start)."""
    length = len(marker)
    at = buf.find(marker, start)
    while at >= 0:
        flag = at + length
        if flag + 3 > len(buf):
            return -1, at  # maybe the end-line, not all here yet
        if buf[flag] in _FLAGS and buf[flag + 1 : flag + 3] == b"\r\n":
            return flag + 3, -1
        at = buf.find(marker, at + 1)
    return -1, max(start, len(buf) - length - 2)
