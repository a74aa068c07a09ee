"""What the transaction layer (txrelay.py) builds besides a forwarded request's transaction
(transactions.transaction_for): the one for a chunk that continues an interrupted one, a
response mapped back.

Rules:
- A chunk the relay interrupted on its way out (WebSocket re-chunking, a frame waiting behind
  it: transports/wsout.py, interrupt.py) goes on under a new id as a transaction like the
  interrupted one's: same sender, Message-ID and Failure-Report, its Byte-Range starting at
  the next byte (protocol/rechunk.py), and the body bytes past the cut counted as its own
  (RFC 4975 §7.1.1, §7.1.2: a REPORT gives the range of its chunk).
- A request goes out with its paths rotated (RFC 4976 §6.2), or to another node of the
  cluster with only its leftmost To-Path URI replaced (routing/hop.py).
- A response goes back under the original id, our URIs moved from To-Path to From-Path
  (rfc-checklist §2.7 step 5); the answer of another node of the cluster, to which the
  request went with its paths kept, under the original id, the URI the sender addressed
  in place of that node's at the front of From-Path: the sender sees the node it sent to
  answer, and a 481 for a session that ended there is the 481 for a token nobody holds
  (README "Running a cluster").
"""

from __future__ import annotations

from ..protocol import (
    Frame,
    FrameReader,
    LocalProtocolError,
    RemoteProtocolError,
    relay_splice,
    retarget,
)
from ..protocol.rechunk import continuation
from ..routing.env import Destination
from .transactions import Transaction

__all__ = ["continued_tx", "mapped_back", "outgoing"]


def outgoing(frame: Frame, dest: Destination, tid: bytes) -> tuple[bytes, bytes]:
    """Request `frame` as it goes towards `dest` under `tid`, and the URI its response's
    To-Path starts with: ours, moved to the front of From-Path (RFC 4976 §6.2); for another
    node of the cluster (routing/hop.py), only the leftmost To-Path URI replaced, so the
    sender's URI. Raises LocalProtocolError when there is no next hop."""
    uri = dest.uri
    if dest.node and uri is not None:
        return retarget(frame, uri.raw.encode(), tid), frame.first_from
    return relay_splice(frame, tid), frame.first_to


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
    new.node = tx.node
    return new


def mapped_back(response: Frame | None, tx: Transaction) -> bytes | None:
    """`response` as the request's sender must get it (rfc-checklist §2.7 step 5): the
    original id, each of our URIs moved from To-Path to the front of From-Path, up to the one
    the sender addressed (more than one after a pass through our own URI, loopback.py); for
    a request sent to another node of the cluster, whose paths it kept, the From-Path's first
    URI ours again, then as above when our URI heads its To-Path (a pass through our own
    URI came first)."""
    if tx.node and response is not None:
        try:
            data = retarget(response, response.first_to, tx.orig_tid, tx.node)
        except LocalProtocolError:
            return None
        if response.first_to != tx.our_uri:
            return data  # the sender's URI heads it
        response = _parse(data)
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
