"""WholeReads: the reader's fast path, for a frame that lies whole and well formed at the
start of a read or of the reader's buffer, and the check of its paths.

Which fast path reads it: interpreted, fastregex.py's one regex match costs the fewest
instructions (its work is all C); compiled, fastpath.py's walk over the head does, and it
remembers a connection's path lines (PathMemo) so a session's next frame skips the walk and
the path check. Either way no Frame carries paths that are not lists of MSRP URIs (RFC 4975
§9): a frame whose paths PathCheck refuses becomes an InvalidFrame, and the memo forgets.
"""

from __future__ import annotations

from typing import Final

from ..hotpath import pure_requested
from .events import InvalidFrame
from .fastpath import PathMemo, read_frame_bytes, read_whole_frame
from .fastregex import read_whole_frame_regex
from .frame import Frame
from .status import Status
from .uri import PathCheck

__all__ = ["WholeReads"]

_REGEX: Final = pure_requested()
"""Called by name, not through a variable chosen at import: compiled, a native call."""


class WholeReads:
    __slots__ = ("max_body", "memo", "paths")

    def __init__(self, max_body: int, paths: PathCheck) -> None:
        self.max_body = max_body
        self.paths = paths  # the reader's: its state machine checks paths with it too
        self.memo = PathMemo()  # compiled: lines whose paths `paths` took

    def in_buffer(self, buf: bytearray) -> Frame | None:
        """The frame at the start of `buf`, when whole and well formed; nothing consumed."""
        if _REGEX:
            return read_whole_frame_regex(buf, self.max_body)
        return read_whole_frame(buf, self.max_body, self.memo)

    def in_read(self, data: bytes) -> Frame | None:
        """The frame at the start of a read, walked where it is (a read that is exactly one
        frame becomes its bytes)."""
        if _REGEX:
            return read_whole_frame_regex(data, self.max_body)
        return read_frame_bytes(data, self.max_body, self.memo)

    def checked(self, frame: Frame) -> Frame | InvalidFrame:
        """`frame`, unless its paths are not lists of MSRP URIs."""
        memo = self.memo
        if memo.hit:
            return frame  # the path lines of a frame that was checked
        problem = self.paths.problem(frame.buf, frame.to_span, frame.from_span)
        if problem is None:
            return frame
        memo.forget()
        head = frame.buf[: frame.hdr_end]
        return InvalidFrame(frame.tid, Status.UNINTELLIGIBLE, problem, frame.is_request, head)
