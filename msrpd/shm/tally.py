"""Tally: the worker counters every relayed frame moves, as native integers.

In a list (StatsCounters.values) each increment of a count past 256 makes a new int object and
frees the old one: compiled, about 150 instructions and two allocator calls an increment, six
increments a frame (issue 16). Here they are plain machine words (`i64` attributes, compiled);
StatsCounters.fold() adds them into its list before it is published or read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_extensions import i64  # compiled, a native int; interpreted, never looked up

__all__ = ["Tally"]


class Tally:
    """Counts since the last take(); attribute names are the Counter names without `frames_`
    for the five frames_in_* kinds."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "frames_out",
        "in_auth",
        "in_other",
        "in_report",
        "in_response",
        "in_send",
        "replies_2xx",
        "replies_4xx",
        "replies_5xx",
    )

    def __init__(self) -> None:
        self.in_send: i64 = 0
        self.in_report: i64 = 0
        self.in_auth: i64 = 0
        self.in_other: i64 = 0
        self.in_response: i64 = 0
        self.frames_out: i64 = 0
        self.replies_2xx: i64 = 0
        self.replies_4xx: i64 = 0
        self.replies_5xx: i64 = 0
        self.bytes_in: i64 = 0
        self.bytes_out: i64 = 0

    def take(self) -> tuple[int, ...]:
        """The counts in Counter order (frames_in_send ... bytes_out), zeroed here."""
        counts = (
            int(self.in_send),
            int(self.in_report),
            int(self.in_auth),
            int(self.in_other),
            int(self.in_response),
            int(self.frames_out),
            int(self.replies_2xx),
            int(self.replies_4xx),
            int(self.replies_5xx),
            int(self.bytes_in),
            int(self.bytes_out),
        )
        self.in_send = self.in_report = self.in_auth = self.in_other = self.in_response = 0
        self.frames_out = self.replies_2xx = self.replies_4xx = self.replies_5xx = 0
        self.bytes_in = self.bytes_out = 0
        return counts
