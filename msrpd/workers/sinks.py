"""Sinks: where the bytes of one relayed frame go, whoever owns the destination connection.

Strategy: relay() resolves its destination once, to a sink; a whole frame is one write to
it, and a streamed frame's head, body pieces and end-line are successive writes to the same
sink, so the pieces of one frame follow one another in order (RFC 4975 §7.1). A sink is made
for one routed frame: it knows the connection (or link) reading it, which flow control pauses
when the destination is congested (flow.py, remoteflow.py).
- LocalSink: this worker owns the connection: bytes go to its outbox (outbox.py).
- HandoffSink: another worker owns it; bytes go over the handoff link (handoff.py), which
  keeps order per destination.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

from ..protocol.splice import Spliced
from ..shm import Counter
from .gone import Sent
from .handoff import frame_flags
from .handoffout import HandoffOut
from .links import HandoffHub
from .outbox import Outbox
from .ports import Blockable, Sink

__all__ = ["HandoffSink", "LocalSink", "send_relayed", "send_spliced", "send_whole"]


class LocalSink(Sink):
    __slots__ = ("conid", "out", "reader")

    def __init__(self, out: Outbox, reader: Blockable | None, conid: int = -1) -> None:
        self.out = out
        """The destination connection's outbox (the class itself: a native call per frame)."""
        self.reader = reader
        self.conid = conid
        """The destination connection's id: a forwarded transaction's key (txrelay.py)."""

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        return self.out.write_frame(data, close_after, source=source, more=more, reader=self.reader)

    def send_spliced(self, data: Spliced, source: Hashable, close_after: bool) -> bool:
        """A whole frame in its two pieces, written as a streamed frame's head and last
        piece: nothing comes between them, the sent log keeps the head (sentlog.py)."""
        out, reader = self.out, self.reader
        if not out.write_frame(data.head, False, source=source, more=True, reader=reader):
            return False
        return out.write_frame(data.rest, close_after, source=source, reader=reader)


class HandoffSink(Sink):
    """All pieces of one streamed frame carry one token: the owner tells streams apart by
    (link, token). The token remembers the frame (`record`), so that a GONE can be reported
    to its sender (gone.py)."""

    __slots__ = ("conid", "hub", "out", "path", "reader", "record", "stream_token")

    def __init__(
        self,
        out: HandoffOut,
        hub: HandoffHub,
        path: Path,
        conid: int,
        record: Sent | None,
        reader: Blockable | None,
    ) -> None:
        self.out = out
        self.hub = hub
        self.path = path
        self.conid = conid
        self.record = record
        self.reader = reader
        self.stream_token: int | None = None

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        return self.send_parts([data], more, close_after)

    def send_parts(self, parts: list[bytes | memoryview], more: bool, close_after: bool) -> bool:
        """send() of the bytes of `parts`, in one handoff message (not joined here)."""
        out, path, conid = self.out, self.path, self.conid
        token = self.stream_token
        if token is None:
            token = out.sent.new_token(self.record)
        self.stream_token = token if more else None
        self.hub.send(path, conid, token, parts, frame_flags(more, close_after))
        out.counters.add(Counter.handoffs_out)
        out.throttle(path, self.reader, conid, token)  # back-pressure across workers
        return True


def send_whole(sink: Sink, data: bytes, source: Hashable, more: bool, close_after: bool) -> bool:
    """sink.send for a routed frame (its head, when `more`): a LocalSink, the usual one, is
    called natively; through the Sink protocol each call is a generic one."""
    if isinstance(sink, LocalSink):
        return sink.send(data, source=source, more=more, close_after=close_after)
    return sink.send(data, source=source, more=more, close_after=close_after)


def send_relayed(
    sink: Sink, data: bytes | Spliced, source: Hashable, more: bool, close_after: bool
) -> bool:
    """A relayed frame to `sink`: whole, or a big one in its two pieces (send_spliced)."""
    if isinstance(data, bytes):
        return send_whole(sink, data, source, more, close_after)
    return send_spliced(sink, data, source, close_after)  # not streamed: `more` is False


def send_spliced(sink: Sink, data: Spliced, source: Hashable, close_after: bool) -> bool:
    """send_whole for a big frame relayed in two pieces (splice.Spliced): its bytes leave in
    them, never copied into one, to this worker's connections and over handoff links; any
    other sink gets them joined."""
    if isinstance(sink, LocalSink):
        return sink.send_spliced(data, source, close_after)
    if isinstance(sink, HandoffSink):
        return sink.send_parts([data.head, data.rest], False, close_after)
    return sink.send(data.joined(), source=source, close_after=close_after)
