"""Reader limits: how much one connection may make the relay buffer.

Rules: every bound is a parameter with a default here, never a constant buried in the reader
(DESIGN §8: nothing a client sends can exhaust memory).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReaderLimits"]


@dataclass(frozen=True, slots=True)
class ReaderLimits:
    max_head: int = 16 * 1024
    """Bytes of first line plus header block. RFC 4975 sets no bound; 16 KiB holds any real
    path list and digest header. Over it the frame is refused with 400 and the connection
    closed, because its end can no longer be found."""

    max_body: int = 1024 * 1024
    """Largest body delivered inside one Frame. A larger body is streamed: the head comes
    first, then BodyPiece events (so memory per connection stays bounded)."""

    stream_large: bool = True
    """When False, a body over max_body is refused with 413 (RFC 4975 §10.7 "stop sending")
    and skipped instead of being streamed."""

    max_sip: int = 64 * 1024
    """Largest SIP message (head plus Content-Length body) accepted on the MSRP port."""

    def __post_init__(self) -> None:
        if self.max_head < 64:
            raise ValueError("max_head must be at least 64 bytes")
        if self.max_body < 0 or self.max_sip < 64:
            raise ValueError("max_body must be >= 0 and max_sip >= 64")
