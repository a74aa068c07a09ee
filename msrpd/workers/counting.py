"""The worker's counters a frame moves, counted on every frame (stats.get, Prometheus).

Into StatsCounters.tally (shm/tally.py: native integers, compiled), not StatsCounters.add (a
Python call each time: shm/stats.py is not compiled) nor Counter.x (an enum lookup each time).
"""

from __future__ import annotations

from typing import Final

from ..protocol import Frame
from ..shm import StatsCounters
from ..shm.tally import Tally

__all__ = ["TWO", "count_frame_in", "count_reply", "count_status"]

TWO: Final = ord("2")


def count_reply(counters: StatsCounters, data: bytes) -> int:
    """Count response `data` by class; its status's first digit (a byte value)."""
    digit = data[data.index(b" ", 5) + 1]
    count_status(counters.tally, (digit - ord("0")) * 100)
    return digit


def count_status(tally: Tally, status: int) -> int:
    """Count a response by its `status` code; its class, the code's first digit (2 for 2xx)."""
    kind = status // 100
    if kind == 2:
        tally.replies_2xx += 1
    elif kind == 4:
        tally.replies_4xx += 1
    else:
        tally.replies_5xx += 1
    return kind


def count_frame_in(tally: Tally, frame: Frame) -> None:
    """Count a frame read, by method."""
    # Compared, not looked up in a dict: compiled, a comparison of a few bytes is cheaper.
    method = frame.method
    if method is None:
        tally.in_response += 1
    elif method == b"SEND":
        tally.in_send += 1
    elif method == b"REPORT":
        tally.in_report += 1
    elif method == b"AUTH":
        tally.in_auth += 1
    else:
        tally.in_other += 1
