"""The worker's counters a frame moves, counted on every frame (stats.get, Prometheus).

List indexes into StatsCounters.values, not StatsCounters.add (a Python call each time:
shm/stats.py is not compiled) nor Counter.x (an enum lookup each time).
"""

from __future__ import annotations

from typing import Final

from ..protocol import Frame
from ..shm import Counter, StatsCounters

__all__ = ["FRAMES_OUT", "TWO", "add", "count_frame_in", "count_reply", "count_status"]

TWO: Final = ord("2")
FRAMES_OUT: Final = int(Counter.frames_out)
_REPLIES_5XX: Final = int(Counter.replies_5xx)
_REPLIES_2XX: Final = int(Counter.replies_2xx)
_REPLIES_4XX: Final = int(Counter.replies_4xx)
_FRAMES_IN_SEND: Final = int(Counter.frames_in_send)
_FRAMES_IN_REPORT: Final = int(Counter.frames_in_report)
_FRAMES_IN_AUTH: Final = int(Counter.frames_in_auth)
_FRAMES_IN_OTHER: Final = int(Counter.frames_in_other)
_FRAMES_IN_RESPONSE: Final = int(Counter.frames_in_response)


def add(counts: list[int], index: int, n: int) -> None:
    """counts[index] += n. Compiled, `+=` on a list item is a generic in-place add of two
    boxed ints (about 150 instructions, issue 16); spelt out, the read and the add are
    native."""
    counts[index] = counts[index] + n


def count_reply(counters: StatsCounters, data: bytes) -> int:
    """Count response `data` by class; its status's first digit (a byte value)."""
    digit = data[data.index(b" ", 5) + 1]
    count_status(counters.values, (digit - ord("0")) * 100)
    return digit


def count_status(counts: list[int], status: int) -> int:
    """Count a response by its `status` code (StatsCounters.values `counts`); its class, the
    code's first digit (2 for 2xx)."""
    kind = status // 100
    # Compared, not looked up in a dict: compiled, an int key would be boxed and hashed.
    add(counts, _REPLIES_2XX if kind == 2 else _REPLIES_4XX if kind == 4 else _REPLIES_5XX, 1)
    return kind


def count_frame_in(counts: list[int], frame: Frame) -> None:
    """Count a frame read, by method (StatsCounters.values `counts`)."""
    # Compared, not looked up in a dict: compiled, a comparison of a few bytes is cheaper.
    method = frame.method
    if method is None:
        index = _FRAMES_IN_RESPONSE
    elif method == b"SEND":
        index = _FRAMES_IN_SEND
    elif method == b"REPORT":
        index = _FRAMES_IN_REPORT
    elif method == b"AUTH":
        index = _FRAMES_IN_AUTH
    else:
        index = _FRAMES_IN_OTHER
    add(counts, index, 1)
