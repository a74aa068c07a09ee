"""Sinks: where the bytes of one relayed frame go, whoever owns the destination connection.

Strategy: relay() resolves its destination once, to a sink; a whole frame is one write to
it, and a streamed frame's head, body pieces and end-line are successive writes to the same
sink, so the pieces of one frame follow one another in order (RFC 4975 §7.1).
- LocalSink: this worker owns the connection and writes to its transport.
- HandoffSink: another worker owns it; bytes go over the handoff link (handoff.py), which
  keeps order per destination.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..shm import Counter, StatsCounters
from .handoff import HandoffFlags
from .links import HandoffHub

__all__ = ["HandoffSink", "LocalSink", "Sink", "Writable"]


class Writable(Protocol):
    def write_frame(self, data: bytes | memoryview, close_after: bool) -> bool: ...


class Sink(Protocol):
    def send(
        self, data: bytes | memoryview, *, more: bool = False, close_after: bool = False
    ) -> bool:
        """Queue `data`; False when the destination is known to be gone."""


class LocalSink:
    __slots__ = ("conn",)

    def __init__(self, conn: Writable) -> None:
        self.conn = conn

    def send(
        self, data: bytes | memoryview, *, more: bool = False, close_after: bool = False
    ) -> bool:
        return self.conn.write_frame(data, close_after)


class HandoffSink:
    __slots__ = ("conid", "counters", "hub", "path", "token")

    def __init__(
        self,
        hub: HandoffHub,
        path: Path,
        conid: int,
        token: Callable[[], int],
        counters: StatsCounters,
    ) -> None:
        self.hub = hub
        self.path = path
        self.conid = conid
        self.token = token
        self.counters = counters

    def send(
        self, data: bytes | memoryview, *, more: bool = False, close_after: bool = False
    ) -> bool:
        flags = (HandoffFlags.MORE if more else 0) | (
            HandoffFlags.CLOSE_AFTER if close_after else 0
        )
        self.hub.send(self.path, self.conid, self.token(), [data], int(flags))
        self.counters.add(Counter.handoffs_out)
        return True
