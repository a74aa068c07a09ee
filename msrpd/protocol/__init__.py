"""Sans-IO MSRP (RFC 4975, RFC 4976): frame reader, frames, URIs, writers, digest.

Nothing in this package does I/O or reads a clock; callers pass bytes in and get bytes out.
"""

from .errors import LocalProtocolError, MsrpProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    BodyPiece,
    ConnectionClosed,
    FrameEnd,
    InvalidFrame,
    NeedData,
    SipMessage,
)
from .frame import Frame, Method
from .limits import ReaderLimits
from .pv import MSRP_PV_KEYS, ConnInfo, msrp_pv
from .reader import Event, FrameReader, ReaderState
from .sipmsg import build_sipmsg
from .splice import forward_paths, relay_pieces, relay_splice, retarget
from .status import Status
from .uri import MSRP_DEFAULT_PORT, MSRPURI_KEYS, MsrpUri, parse_uri, split_path
from .writer import build_invalid_reply, build_reply, build_request, invalid_gets_reply

__all__ = [
    "MSRPURI_KEYS",
    "MSRP_DEFAULT_PORT",
    "MSRP_PV_KEYS",
    "NEED_DATA",
    "BodyPiece",
    "ConnInfo",
    "ConnectionClosed",
    "Event",
    "Frame",
    "FrameEnd",
    "FrameReader",
    "InvalidFrame",
    "LocalProtocolError",
    "Method",
    "MsrpProtocolError",
    "MsrpUri",
    "NeedData",
    "ReaderLimits",
    "ReaderState",
    "RemoteProtocolError",
    "SipMessage",
    "Status",
    "build_invalid_reply",
    "build_reply",
    "build_request",
    "build_sipmsg",
    "forward_paths",
    "invalid_gets_reply",
    "msrp_pv",
    "parse_uri",
    "relay_pieces",
    "relay_splice",
    "retarget",
    "split_path",
]
