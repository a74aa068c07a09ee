"""Continuations: a chunk the relay cuts on its way out goes on as a transaction of the same
sender (txrelay.py's part for them; RFC 4975 §7.1.1, rfc-checklist §2.4).

Rules:
- The worker writing a chunk may cut it: WebSocket re-chunking (transports/wsout.py), a
  frame waiting behind it (interrupt.py). The rest goes on in a new chunk whose id comes
  from `continued`: named after the worker that owns the cut chunk's transaction (its id
  says which, protocol/transact.py), so the receiver's answer to it is handed there as any
  response is.
- That worker makes the new chunk a transaction like the cut one (txbuild.continued_tx):
  matched on the same connection, its own Byte-Range and body bytes, the stream still being
  forwarded (a 413 to either cuts it, txrelay.py), its timer from its own last byte; the cut
  chunk's timer starts at the cut. Told at once when it is this worker, else with a CHUNK on
  the handoff link, sent before the new chunk is written and so before any answer to it,
  which takes the same link.
- Only for a live transaction that went out on that connection: a CHUNK naming anything
  else changes nothing (an answer to the new chunk is then unmatched). A chunk whose id
  names no live worker of ours (a route without transactions) gets None: the writer then
  leaves it whole, or (WebSocket) gives it a random id.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..protocol.transact import RANDOM_HEX, TID_LENGTH, make_tid, tid_owner
from .handoff import Handoff, HandoffKind
from .liveworkers import LiveWorkers
from .transactions import Transaction, TransactionTable
from .txbuild import continued_tx

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["Continuations"]


class Continuations:
    __slots__ = ("ctx", "me", "restart", "table", "workers")

    def __init__(
        self,
        ctx: WorkerContext,
        table: TransactionTable,
        workers: LiveWorkers,
        restart: Callable[[Transaction], None],
    ) -> None:
        """`workers`: the live ones (liveworkers.py); `restart(tx)` starts a timer."""
        self.ctx = ctx
        self.me = (ctx.ident.slot, ctx.ident.generation)
        self.table = table
        self.workers = workers
        self.restart = restart

    def continued(self, arrival: tuple[int, ...], tid: bytes, written: int) -> bytes | None:
        """The id of the chunk that continues chunk `tid`, cut on connection `arrival` (its
        current and former ids) after `written` body bytes; None when `tid` names no live
        worker of ours."""
        owner = tid_owner(tid)
        if owner is None:
            return None
        new = make_tid(tid[:6], os.urandom(RANDOM_HEX // 2).hex())
        if owner == self.me:
            self.split(arrival, tid, new, written)
            return new
        if self.ctx.hub is None or owner not in self.workers:
            return None
        data = struct.pack(f"!{len(arrival)}QQ", *arrival, written) + tid + new
        self.ctx.handoffs.control(owner, HandoffKind.CHUNK, arrival[0], len(arrival), data)
        return new

    def handed(self, msg: Handoff) -> None:
        """A CHUNK another worker sent (continued) for one of our transactions."""
        size, payload = 8 * msg.token, msg.payload
        if msg.token < 1 or len(payload) != size + 8 + 2 * TID_LENGTH:
            return
        *arrival, written = struct.unpack_from(f"!{msg.token}QQ", payload)
        at = size + 8
        tid, new = bytes(payload[at : at + TID_LENGTH]), bytes(payload[at + TID_LENGTH :])
        self.split(tuple(arrival), tid, new, written)

    def split(self, arrival: tuple[int, ...], tid: bytes, new: bytes, written: int) -> None:
        """Chunk `tid` (out on `arrival`) ended after `written` body bytes and goes on as
        `new`; nothing when `tid` is no live transaction that went out there."""
        table = self.table
        tx = table.match(tid, arrival)
        if tx is None or new in table.live:
            return
        cont = continued_tx(tx, new, written)
        stream = tx.stream
        self.restart(tx)  # before `cont`'s: their deadlines come up in the chunks' order
        table.add(cont, time.monotonic(), whole=stream is None)
        if stream is not None:
            stream.tx, cont.stream = cont, stream  # tx.stream stays: a 413 to it cuts too
