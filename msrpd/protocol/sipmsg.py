"""Kamailio's fake SIP message for a frame (reference §3.2, msrp_fake_sipmsg): what a
route reads as $msrp(sipmsg) when `[msrp] sipmsg` is on."""

from __future__ import annotations

from .frame import Frame

__all__ = ["SIPMSG_PREFIX", "build_sipmsg"]

# The fixed head of Kamailio's fake SIP message (reference §3.2, msrp_fake_sipmsg).
SIPMSG_PREFIX = (
    b"MSRP sip:a@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa\r\n"
    b"From: <b@127.0.0.1>;tag=a\r\n"
    b"To: <a@127.0.0.1>\r\n"
    b"Call-ID: a\r\n"
    b"CSeq: 1 MSRP\r\n"
    b"Content-Length: 0\r\n"
    b"MSRP-First-Line: "
)


def build_sipmsg(frame: Frame) -> bytes:
    """Kamailio's fake SIP message for `frame` (reference §3.2): the fixed prefix, the MSRP first
    line and header lines as received, then one CRLF. Body and end-line are not included."""
    return b"".join((SIPMSG_PREFIX, frame.buf[: frame.hdr_end], b"\r\n"))
