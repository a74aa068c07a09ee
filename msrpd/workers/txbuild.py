"""What the transaction layer (txrelay.py) builds besides a forwarded request's transaction
(transactions.transaction_for): the one for a chunk that continues an interrupted one, a
response mapped back.

Rules:
- A chunk the relay interrupted on its way out (WebSocket re-chunking, a frame waiting behind
  it: transports/wsout.py, interrupt.py) goes on under a new id as a transaction like the
  interrupted one's: same sender, Message-ID and Failure-Report, its Byte-Range starting at
  the next byte (protocol/rechunk.py), and the body bytes past the cut counted as its own
  (RFC 4975 §7.1.1, §7.1.2: a REPORT gives the range of its chunk).
- A response goes back under the original id, our URIs moved from To-Path to From-Path
  (rfc-checklist §2.7 step 5).
"""

from __future__ import annotations

from ..protocol import Frame, FrameReader, LocalProtocolError, RemoteProtocolError, relay_splice
from ..protocol.rechunk import continuation
from .transactions import Transaction

__all__ = ["continued_tx", "mapped_back"]


def continued_tx(tx: Transaction, tid: bytes, written: int) -> Transaction:
    """The transaction of the chunk `tid` that continues `tx`'s chunk, cut after `written`
    body bytes: the bytes `tx` counted past the cut are its; `tx` keeps those before."""
    written = min(written, tx.received)
    head = tx.head
    template = continuation(head, star=False)
    if template is not None:
        template.offset += written
        head = template.head(tx.orig_tid)
    received, tx.received = tx.received - written, written
    # The new head differs from the Byte-Range on: the paths before it keep their spans.
    new = Transaction(
        tid,
        tx.origin,
        tx.orig_tid,
        tx.method,
        tx.failure_report,
        head,
        tx.to_span,
        tx.from_span,
        tx.hop_uri,
    )
    new.out, new.received, new.deadline, new.ended = tx.out, received, tx.deadline, tx.ended
    return new


def mapped_back(response: Frame | None, tx: Transaction) -> bytes | None:
    """`response` as the request's sender must get it (rfc-checklist §2.7 step 5): the
    original id, each of our URIs moved from To-Path to the front of From-Path, up to the one
    the sender addressed (more than one after a pass through our own URI, loopback.py)."""
    while response is not None:
        try:
            data = relay_splice(response, tx.orig_tid)
        except LocalProtocolError:
            return None
        if response.first_to == tx.our_uri:
            return data
        response = _parse(data)
    return None


def _parse(data: bytes | memoryview) -> Frame | None:
    reader = FrameReader()
    reader.receive_data(bytes(data))
    try:
        return next((e for e in reader.events() if isinstance(e, Frame)), None)
    except RemoteProtocolError:
        return None
