"""StreamSink: where a streamed request forwarded under a new transaction id goes
(txrelay.py), around the sink delivery chose.

Rules: body pieces pass unchanged and are counted (a REPORT's Byte-Range gives the bytes
that arrived, RFC 4975 §7.1.2); the end-line, the one write without `more` (the reader's
FrameEnd.raw, or the "#" a lost sender gets), goes out under the new id (protocol/transact.py)
and starts the transaction's timer (RFC 4976 §6.4.1: from the last byte written). A next hop
that refuses the message (413) has the chunk ended at once with "#" (RFC 4975 §10.5); the rest
of it goes nowhere. A chunk its sender ends with "#" aborts the message: its later chunks are
refused (RFC 4975 §7.1). A chunk interrupted on its way out (txchunks.py) goes on as
another transaction: `tx` becomes that one, which counts the bytes and whose timer the
end-line starts.
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

    def refuse_message(self, conid: int, message_id: bytes | None) -> None:
        """The later chunks of that message from connection `conid` are refused."""


class StreamSink(Sink):
    """A streamed request's sink: body pieces pass (and count, for a REPORT's Byte-Range);
    the end-line (the one write without `more`) goes out under the new id, and the
    transaction's timer starts from it. Once interrupted (a 413 came back), the chunk has
    ended for the next hop and the rest of it goes nowhere."""

    __slots__ = ("cut", "inner", "message_id", "source", "tid", "timers", "tx")

    def __init__(
        self,
        inner: Sink,
        tid: bytes,
        tx: Transaction | None,
        timers: Timers,
        source: int,
        message_id: bytes | None,
    ) -> None:
        self.inner = inner
        self.tid = tid
        self.tx = tx
        self.timers = timers
        self.source = source
        self.message_id = message_id
        """A SEND's Message-ID: its sender's "#" end-line refuses the message's later
        chunks (RFC 4975 §7.1)."""
        self.cut = False

    def interrupt(self) -> Transaction | None:
        """End the forwarded chunk now with "#": the message goes no further (RFC 4975
        §7.1, §10.5). Returns the transaction of the chunk it cut; None when the chunk had
        ended already."""
        if self.cut:
            return None
        self.cut = True
        self.inner.send(retid_end(b"#\r\n", self.tid), source=self.source)
        return self.tx

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
        self.cut = True  # it has ended: nothing is left to interrupt
        sent = self.inner.send(retid_end(data, self.tid), source=source, close_after=close_after)
        if bytes(data[-3:-2]) == b"#":  # its sender aborted the message
            self.timers.refuse_message(self.source, self.message_id)
        if tx is not None and not tx.ended:
            self.timers.restart(tx)
        return sent
