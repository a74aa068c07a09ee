"""Inbound: what a worker does with the messages other workers hand it (the hub's HubHandler).

Rules (links.py dispatches by kind; this module goes straight down to the connections):
- A FRAME for a live connection of ours is written to it (its outbox). For a connection
  that moved away the migration code passes it on; for anything else deliver says False and
  the hub answers GONE.
- The link a FRAME came on is its reader (a LinkSource, flow.py): a congested destination asks
  the sending worker to pause what relays into it; the link itself keeps being read
  (remoteflow.py).
- A GONE means a frame we handed over was lost: its sender hears of it (gone.py).
- A HELD asks which of its link's frames we still hold (held.py): the HOLDING answer goes
  back on that link, after the GONEs of every frame it sent before; a HOLDING is a peer's
  answer to ours (gone.py).
- A RESPONSE is a response another worker read for one of our transactions, a CHUNK a chunk
  of one of them that another worker interrupted on its way out (txrelay.py); a CLOSED says
  a connection ours may wait on has closed (txrelay.py).
- One link read is one batch: the connections' writes it causes leave together at its end
  (the context's batch: begin/flush_now, batch.py).
- A link that closes ends the streamed frames it was writing into our connections, or they
  would wait for their last piece forever (issue 12).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING

from ..shm import Counter
from .flow import LinkSource
from .handoff import Handoff, HandoffFlags, HandoffKind, encode_header
from .held import held_tokens
from .link import Link

if TYPE_CHECKING:
    from .context import WorkerContext
    from .gone import GoneReports
    from .txrelay import TxRelay

__all__ = ["Inbound"]

logger = logging.getLogger(__name__)


class Inbound:
    """The HubHandler (links.py) of the worker whose context is `ctx`; the context is read
    when messages come, not at construction (the hub is built while the context is)."""

    __slots__ = ("ctx", "reports", "transactions")

    def __init__(
        self, ctx: WorkerContext, reports: GoneReports, transactions: TxRelay | None = None
    ) -> None:
        self.ctx = ctx
        self.reports = reports
        self.transactions = transactions
        """Where a RESPONSE for one of our transactions goes (txrelay.py)."""

    def before_read(self) -> None:
        self.ctx.batch.begin()

    def after_read(self) -> None:
        self.ctx.batch.flush_now()

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        ctx = self.ctx
        conn = ctx.conns.get(conid)
        if conn is None or conn.closed:
            if ctx.mover is None or not ctx.mover.deliver(conid, payload, flags, source):
                return False
            ctx.last_delivery = time.monotonic()  # forwarded: a retiring worker waits for quiet
            return True
        ctx.counters.add(Counter.handoffs_in)
        conn.stats.handed = True
        ctx.last_delivery = time.monotonic()
        more = bool(flags & HandoffFlags.MORE)
        close_after = bool(flags & HandoffFlags.CLOSE_AFTER)
        forwarded = bool(flags & HandoffFlags.FORWARDED)
        # A REPORT the sender's old worker made is the relay's own: no relayed frame to account.
        origin = None if flags & HandoffFlags.NOTICE else source
        reader = LinkSource(link, conid)
        return conn.out.write_frame(
            payload, close_after, source=origin, more=more, forwarded=forwarded, reader=reader
        )

    def on_gone(self, conid: int, token: int) -> None:
        self.reports.handoff_gone(conid, token)

    def close_conn(self, conid: int) -> None:
        conn = self.ctx.conns.get(conid)
        if conn is not None:
            conn.close("closed on request of another worker")

    def on_flow(self, pause: bool, conid: int, token: int, link_id: int) -> None:
        self.ctx.handoffs.flow.on_flow(pause, conid, token, link_id)

    def on_control(self, link: Link, msg: Handoff) -> None:
        if msg.kind is HandoffKind.HELD:
            self.answer_held(link, msg.token)
            return
        if msg.kind is HandoffKind.HOLDING:
            self.reports.memory.holding(msg.token, msg.payload)
            return
        transactions = self.transactions
        if msg.kind is HandoffKind.RESPONSE:
            if transactions is not None:
                transactions.handed(msg)
            return
        if msg.kind is HandoffKind.CLOSED:
            if transactions is not None:
                transactions.closed_elsewhere(msg)
            return
        if msg.kind is HandoffKind.CHUNK:
            if transactions is not None:
                transactions.chunks.handed(msg)
            return
        mover = self.ctx.mover
        if mover is None:
            logger.warning("handoff: %s for %x ignored", msg.kind.name, msg.conid)
        else:
            mover.on_control(msg, link)

    def answer_held(self, link: Link, question: int) -> None:
        """HOLDING: the tokens of `link`'s frames not passed to a kernel here yet."""
        ctx = self.ctx
        sources = [conn.out.held_sources() for conn in ctx.conns.values()]
        sources.append(iter(ctx.handoffs.sent.forwarded.values()))
        if ctx.mover is not None:
            sources.append(ctx.mover.queued_sources())
        payload = held_tokens(id(link), itertools.chain.from_iterable(sources))
        link.push_reply(encode_header(HandoffKind.HOLDING, 0, 0, question, len(payload)) + payload)

    def on_link_lost(self, link_id: int) -> None:
        ctx = self.ctx
        ctx.handoffs.flow.link_lost(link_id)
        for conn in list(ctx.conns.values()):
            out = conn.out
            for source in [s for s in out.gate.open if isinstance(s, tuple) and s[0] == link_id]:
                out.abandon(source)
        ctx.batch.flush_dirty()
