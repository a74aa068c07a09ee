"""ReaderState: where the frame reader (reader.py) is in the byte stream."""

from __future__ import annotations

from enum import Enum

__all__ = ["ReaderState"]


class ReaderState(Enum):
    IDLE = "idle"  # between frames
    HEAD = "head"  # first line and headers
    ENDLINE = "endline"  # a bodiless frame's end-line is arriving
    BODY = "body"  # body of a frame that may still come whole
    STREAM = "stream"  # body of a streamed frame
    SKIP = "skip"  # body of a frame already refused
    SIP = "sip"  # a SIP message on the MSRP port
    CLOSED = "closed"  # EOF seen and reported, or a fatal error raised
