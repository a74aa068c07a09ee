"""StreamSink: where a streamed request forwarded under a new transaction id goes
(txrelay.py), around the sink delivery chose.

Rules: body pieces pass unchanged and are counted (a REPORT's Byte-Range gives the bytes
that arrived, RFC 4975 §7.1.2); the end-line, the one write without `more` (the reader's
FrameEnd.raw, or the "#" a lost sender gets), goes out under the new id (protocol/transact.py)
and starts the transaction's timer (RFC 4976 §6.4.1: from the last byte written). A next hop
that refuses the message (413) has the chunk ended at once with "#" (RFC 4975 §10.5); the rest
of it goes nowhere.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from ..protocol.transact import retid_end
from .ports import Sink
from .transactions import Transaction

__all__ = ["StreamSink", "Timers"]


class Timers(Protocol):
    """The transaction layer (txrelay.TxRelay)."""

    def restart(self, tx: Transaction) -> None:
        """`tx`'s request has been written whole now: its timer starts."""


class StreamSink(Sink):
    """A streamed request's sink: body pieces pass (and count, for a REPORT's Byte-Range);
    the end-line (the one write without `more`) goes out under the new id, and the
    transaction's timer starts from it. Once interrupted (a 413 came back), the chunk has
    ended for the next hop and the rest of it goes nowhere."""

    __slots__ = ("cut", "inner", "source", "tid", "timers", "tx")

    def __init__(
        self, inner: Sink, tid: bytes, tx: Transaction | None, timers: Timers, source: int
    ) -> None:
        self.inner = inner
        self.tid = tid
        self.tx = tx
        self.timers = timers
        self.source = source
        self.cut = False

    def interrupt(self) -> None:
        """End the forwarded chunk now with "#": the message goes no further (RFC 4975
        §7.1, §10.5)."""
        if not self.cut:
            self.cut = True
            self.inner.send(retid_end(b"#\r\n", self.tid), source=self.source)

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        tx = self.tx
        if more:
            if self.cut:
                return True
            if tx is not None:
                tx.received += len(data)
            return self.inner.send(data, source=source, more=True, close_after=close_after)
        if tx is not None:
            tx.stream = None
        if self.cut:
            return True
        sent = self.inner.send(retid_end(data, self.tid), source=source, close_after=close_after)
        if tx is not None and not tx.ended:
            self.timers.restart(tx)
        return sent
