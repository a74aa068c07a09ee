"""A retiring worker's links to next hops: out of the registry at once, closed once quiet.

Why (issue 12 item 4): a connection the relay opened to a next hop cannot move (it is not
a client's), and while the registry names it every worker of the new generation hands it
its frames for that next hop, so it never goes idle and its old worker never exits.

Rules:
- When the worker retires, its links leave the registry (Delivery.unlist): the new
  generation opens its own connection to the next hop on its next frame for it (relays
  may open new connections to deliver requests: RFC 4976 §3, rfc-checklist §4.2). A
  sender's frames routed before that went on the old link, later ones go on the new: none
  is lost or doubled, and each connection keeps its own order. Frames other workers handed
  over before they saw the change still arrive here and are written to the old link.
- The old link keeps writing what is queued on it, and reading (responses, REPORTs, frames
  from the next hop, relayed as ever); what this worker still relays itself (a TLS client
  that stays) may reuse it.
- It closes once it is between frames with nothing to write and no byte has gone either
  way for LINK_QUIET seconds (the next hop's responses to the last frames are in), or, if
  it never goes quiet, at the first moment it is between frames with nothing to write
  once `[core] drain_timeout` has passed since retiring began (the new generation ran).
  The worker then exits as for any other connection.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .ports import LinkConn

__all__ = ["LINK_QUIET", "RetiringLinks"]

logger = logging.getLogger(__name__)

LINK_QUIET = 2.0
"""Seconds without a byte either way before a retiring worker's link to a next hop closes."""


class Unlister(Protocol):
    def unlist(self) -> int:
        """Take this worker's links to next hops out of the registry; how many (delivery.py)."""


class RetiringLinks:
    """The links to next hops of a retiring worker.

    Args:
        conns: this worker's connections.
        slot: this worker's slot (for the log).
        delivery: this worker's Delivery (its links and the registry).
        linger: seconds after the reload at which a link that never goes quiet is closed
            anyway, between frames ([core] drain_timeout).
    """

    def __init__(
        self, conns: Mapping[int, LinkConn], slot: int, delivery: Unlister | None, linger: float
    ) -> None:
        self.conns = conns
        self.slot = slot
        self.delivery = delivery
        self.linger = linger
        self.until = 0.0
        self.active = False
        self.seen: dict[int, tuple[int, int, float]] = {}
        """conid -> (bytes in, bytes out, when either last changed)."""

    def start(self, now: float) -> None:
        """Retiring from `now`: take the links out of the registry."""
        if self.active or self.delivery is None:
            return
        self.active = True
        self.until = now + self.linger
        count = self.delivery.unlist()
        if count:
            logger.info(
                "worker %d retiring: %d links to next hops left to the new generation",
                self.slot,
                count,
            )

    def tick(self, now: float) -> None:
        """Close each link that is done (module docstring)."""
        if not self.active:
            return
        seen: dict[int, tuple[int, int, float]] = {}
        for conn in list(self.conns.values()):
            if not conn.outbound or conn.closed:
                continue
            last = self.seen.get(conn.conid)
            since = now
            stats = conn.stats
            if last is not None and last[:2] == (stats.bytes_in, stats.bytes_out):
                since = last[2]
            seen[conn.conid] = (stats.bytes_in, stats.bytes_out, since)
            if not _between_frames(conn):
                continue
            if now - since >= LINK_QUIET:
                self._close(conn, f"quiet for {LINK_QUIET:.0f} s")
            elif now >= self.until:
                self._close(conn, "drain_timeout passed")
        self.seen = seen

    def _close(self, conn: LinkConn, why: str) -> None:
        logger.info("retiring: closing the link to %s: %s", conn.peer_key, why)
        conn.close(f"retired: {why}")


def _between_frames(conn: LinkConn) -> bool:
    """Nothing to write, nothing half read, nothing half relayed."""
    return (
        not conn.unsent
        and conn.reader.buffered == 0
        and conn.stream_sink is None
        and conn.intake.held_replies is None
        and not conn.intake.blockers
    )
