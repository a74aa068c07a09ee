"""Failure-Report for msrp.t_reply until the transaction layer lands (issue 14, h-tx).

Rules (rfc-checklist §2.4; RFC 4975 §7.1.4, §7.1.2): FR yes or absent: every response is sent;
partial: only a non-2xx; no: none; a REPORT or a response is never answered.
"""

from __future__ import annotations

from ..protocol import Frame
from ..protocol.frame import REPORT

__all__ = ["fr_allows"]


def fr_allows(frame: Frame, code: int) -> bool:
    """Whether a hop-by-hop response `code` to `frame` may be sent."""
    if frame.method is None or frame.method == REPORT:
        return False
    fr = frame.header("Failure-Report")
    if fr is None:
        return True
    fr = fr.strip().lower()
    if fr == b"no":
        return False
    return fr != b"partial" or not 200 <= code < 300
