"""Worker processes: frames handed between workers (handoff.py codec, links.py hub, link.py
sockets)."""

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
from .link import HandoffStats
from .links import HandoffHub, HubHandler

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "ConnId",
    "Handoff",
    "HandoffDecoder",
    "HandoffError",
    "HandoffFlags",
    "HandoffHub",
    "HandoffKind",
    "HandoffStats",
    "HubHandler",
    "conid_owner",
    "conid_serial",
    "encode_frame_parts",
    "encode_handoff",
    "encode_header",
    "make_conid",
]
