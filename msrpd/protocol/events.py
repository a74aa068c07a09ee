"""Events the frame reader yields, besides Frame itself (frame.py).

Rules: events are frozen, slotted and hold bytes only (no sockets, no worker state), as h11's
events do. A streamed frame comes as Frame (head only, `streamed` true), then BodyPiece events
in order, then one FrameEnd.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .status import Status

__all__ = [
    "NEED_DATA",
    "BodyPiece",
    "ConnectionClosed",
    "FrameEnd",
    "InvalidFrame",
    "NeedData",
    "SipMessage",
]


class NeedData(Enum):
    """Sentinel type: the reader needs more bytes before it can say anything."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class BodyPiece:
    """Body bytes of the streamed frame in progress, exactly as received."""

    data: bytes


@dataclass(frozen=True, slots=True)
class FrameEnd:
    """The end of a streamed frame.

    Attributes:
        tid: the frame's transaction id.
        flag: b"$", b"+" or b"#" (RFC 4975 §7.1).
        raw: the bytes that close the frame on the wire: the CRLF that precedes the end-line
            (RFC 4975 §7.1) and the end-line itself.
    """

    tid: bytes
    flag: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class InvalidFrame:
    """A frame that could be delimited but breaks the grammar (RFC 4975 §9).

    The stream stays in sync: the reader skips the rest of this frame and goes on. A request
    deserves a response with `status` (RFC 4975 §7.2); a response is never answered.

    Attributes:
        tid: the transaction id.
        status: the status to answer with.
        reason: what is wrong, for the log and the response's comment.
        is_request: False when the first line reads as a response.
        head: the first line and whatever header lines were read, CRLFs included.
    """

    tid: bytes
    status: Status
    reason: str
    is_request: bool
    head: bytes


@dataclass(frozen=True, slots=True)
class SipMessage:
    """A SIP message that arrived on the MSRP port (Kamailio's shared-port behaviour,
    reference §1.1): the start line, headers, blank line and Content-Length body."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection between frames."""
