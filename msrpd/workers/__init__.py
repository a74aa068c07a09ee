"""Worker processes: frames handed between workers (handoff.py codec, links.py sockets)."""

from .handoff import (
    DEFAULT_MAX_PAYLOAD,
    ConnId,
    Handoff,
    HandoffDecoder,
    HandoffError,
    HandoffFlags,
    HandoffKind,
    conid_owner,
    conid_serial,
    encode_frame_parts,
    encode_handoff,
    encode_header,
    make_conid,
)
from .links import CloseConn, Deliver, HandoffHub, HandoffStats, OnGone

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "CloseConn",
    "ConnId",
    "Deliver",
    "Handoff",
    "HandoffDecoder",
    "HandoffError",
    "HandoffFlags",
    "HandoffHub",
    "HandoffKind",
    "HandoffStats",
    "OnGone",
    "conid_owner",
    "conid_serial",
    "encode_frame_parts",
    "encode_handoff",
    "encode_header",
    "make_conid",
]
