"""Flow control across workers, per destination connection (PAUSE/RESUME, handoff.py).

Why (issue 12, item 11): pausing a whole handoff link because one destination is congested
holds up every frame from that worker to this one, and it deadlocks as soon as the traffic
forms a cycle: connection O on worker X is congested because its far end I (on worker Y,
directly or through another relay) does not read; I does not read because the link Y->X is
full; X does not read that link because O is congested. Frames of unrelated sessions then wait
in the link for good, with nothing logged.

Rules:
- Owner side: a frame that came over a link has a LinkSource (flow.py) as its source. When the
  destination is congested, FlowControl blocks the LinkSource, which sends PAUSE(conid) back on
  that link, and RESUME when the destination drains or closes. The link keeps being read.
- Sender side: RemoteFlow remembers the paused conids. A connection that relays into a paused
  conid (HandoffSink -> HandoffOut.throttle) stops reading until RESUME, or until the
  link the PAUSE came on is gone.
Memory stays bounded: after a PAUSE each source sends at most one more read into the
destination, plus what its link held (bounded by WRITE_HIGH, flow.py).
"""

from __future__ import annotations

from .ports import Blockable

__all__ = ["RemoteFlow"]


class RemoteFlow:
    """Sender side: conids another worker asked us to stop relaying into."""

    __slots__ = ("blocked", "paused")

    def __init__(self) -> None:
        self.paused: dict[int, tuple[int, int]] = {}
        """conid -> (the id of the link its PAUSE came on, the token of the stream that may go
        on)."""
        self.blocked: dict[int, dict[Blockable, int]] = {}
        """conid -> the sources paused for it -> the token of their last frame."""

    def on_flow(self, pause: bool, conid: int, token: int, link: int) -> None:
        if not pause:
            self.paused.pop(conid, None)
            self._release(conid, None)
            return
        self.paused[conid] = (link, token)
        if token:
            self._release(conid, token)  # the owner's stream at the far end: it must go on

    def link_lost(self, link: int) -> None:
        """No RESUME can come on the link with id `link` any more: let its sources go."""
        for conid in [c for c, (via, _token) in self.paused.items() if via == link]:
            del self.paused[conid]
            self._release(conid, None)

    def throttle(self, conid: int, token: int, source: Blockable | None) -> None:
        """`source` has just relayed the frame `token` into `conid`: pause it while `conid`
        is paused, unless that frame is the stream the far end is writing."""
        state = self.paused.get(conid)
        if source is None or state is None or (token and token == state[1]):
            return
        sources = self.blocked.setdefault(conid, {})
        if source not in sources:
            source.block(("handoff", conid))
        sources[source] = token

    def _release(self, conid: int, token: int | None) -> None:
        sources = self.blocked.get(conid)
        if not sources:
            return
        for source, last in list(sources.items()):
            if token is None or last == token:
                del sources[source]
                source.unblock(("handoff", conid))
        if not sources:
            del self.blocked[conid]
