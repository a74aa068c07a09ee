"""Sinks: where the bytes of one relayed frame go, whoever owns the destination connection.

Strategy: relay() resolves its destination once, to a sink; a whole frame is one write to
it, and a streamed frame's head, body pieces and end-line are successive writes to the same
sink, so the pieces of one frame follow one another in order (RFC 4975 §7.1).
- LocalSink: this worker owns the connection and writes to its transport.
- HandoffSink: another worker owns it; bytes go over the handoff link (handoff.py), which
  keeps order per destination.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Protocol

from ..shm import Counter, StatsCounters
from .handoff import frame_flags
from .links import HandoffHub

__all__ = ["HandoffSink", "LocalSink", "Sink", "Writable"]


class Writable(Protocol):
    def write_frame(
        self,
        data: bytes | memoryview,
        close_after: bool = False,
        *,
        source: Hashable = None,
        more: bool = False,
    ) -> bool: ...


class Sink(Protocol):
    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        """Queue `data`; False when the destination is known to be gone. `source` names the
        connection a streamed frame comes from; `more` says pieces of it follow."""


class LocalSink:
    __slots__ = ("conn",)

    def __init__(self, conn: Writable) -> None:
        self.conn = conn

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        return self.conn.write_frame(data, close_after, source=source, more=more)


class HandoffSink:
    """All pieces of one streamed frame carry one token: the owner tells streams apart by
    (link, token)."""

    __slots__ = ("conid", "counters", "hub", "path", "stream_token", "throttle", "token")

    def __init__(
        self,
        hub: HandoffHub,
        path: Path,
        conid: int,
        token: Callable[[], int],
        counters: StatsCounters,
        throttle: Callable[[Path, int, int], None],
    ) -> None:
        self.throttle = throttle
        self.hub = hub
        self.path = path
        self.conid = conid
        self.token = token
        self.counters = counters
        self.stream_token: int | None = None

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        token = self.stream_token if self.stream_token is not None else self.token()
        self.stream_token = token if more else None
        self.hub.send(self.path, self.conid, token, [data], frame_flags(more, close_after))
        self.counters.add(Counter.handoffs_out)
        self.throttle(self.path, self.conid, token)  # back-pressure across workers (remoteflow.py)
        return True
