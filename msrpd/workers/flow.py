"""FlowControl: a connection that relays into a congested one stops reading until it drains.

Rules (uvicorn's flow_control.py, per destination): memory per connection stays bounded
(issue 5) because a source never gets further ahead of its destination than the destination's
write high-water mark plus one read. When a write leaves a destination congested (its
transport paused writing, or frames wait behind a streamed one), the connection whose data
is being routed right now (its reader, passed down with the write) pauses reading and is
remembered; when the destination drains or closes, its blocked sources resume. A source
blocked by several destinations resumes when the last one lets it go.
Across workers the same holds per destination: frames that arrive over a handoff link have
a LinkSource (that link, that destination) as their source, so a congested destination sends
PAUSE to the sending worker, which pauses the connections that relay into it until RESUME
(remoteflow.py). The link itself keeps being read: pausing it would hold up every frame from
that worker to this one and deadlock a cycle (issue 12, item 11). A sender whose link holds
more than WRITE_HIGH also pauses the connection it relays from until the link drains
(HandoffSink, links.when_drained).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .ports import Blockable

if TYPE_CHECKING:
    from .gate import FrameGate

__all__ = ["Dest", "FlowControl", "FlowLink", "LinkSource", "link_of"]


class Dest(Hashable, Protocol):
    """What flow control reads of a destination's output (outbox.py)."""

    @property
    def owner(self) -> object:
        """The connection it writes for: never paused for its own writes."""

    @property
    def gate(self) -> FrameGate: ...

    @property
    def congested(self) -> bool: ...

    @property
    def backlogged(self) -> bool: ...


class FlowLink(Protocol):
    def send_flow(self, pause: bool, conid: int, token: int = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class LinkSource:
    """The source of frames that came over a handoff `link` for our connection `conid`:
    pausing it asks the sending worker to pause what relays into `conid` (remoteflow.py),
    except the stream the connection is writing (its gate owner, when it came on `link`)."""

    link: FlowLink
    conid: int

    def block(self, dest: Hashable) -> None:
        owner = getattr(getattr(dest, "gate", None), "owner", None)
        token = owner[1] if isinstance(owner, tuple) and owner[0] == id(self.link) else 0
        self.link.send_flow(True, self.conid, token)

    def unblock(self, dest: Hashable) -> None:
        self.link.send_flow(False, self.conid)


def link_of(source: object) -> object:
    """The link a source reads from (itself for anything but a LinkSource)."""
    return source.link if isinstance(source, LinkSource) else source


class FlowControl:
    """One per destination connection: the sources it has paused.

    The source whose streamed frame the destination is writing (its FrameGate owner) is
    paused only for its own backlog, never for frames held behind it: they wait for its end,
    so pausing it would never end (issue 12, item 11). When the owner changes, paused sources
    are told again (a new owner goes on; a handoff link learns which stream may go on).
    Several sources may be paused for backlog at once: an owner paused for its backlog stays
    paused after its stream ends, while the next owner's backlog pauses that one too; each is
    resumed when the backlog drains (one slot lost the first, which then never read again).
    """

    __slots__ = ("blocked", "exempt", "owner_blocked")

    def __init__(self) -> None:
        self.blocked: dict[Blockable, Hashable] = {}
        """Paused source -> the key its writes carry (FrameGate source)."""
        self.owner_blocked: dict[Blockable, None] = {}
        """Sources paused for backlog only, as gate owners (in order: a dict)."""
        self.exempt: Hashable = None
        """The gate owner when the paused sources were last told."""

    @property
    def active(self) -> bool:
        return bool(self.blocked) or bool(self.owner_blocked)

    def check(self, dest: Dest, key: Hashable = None, source: Blockable | None = None) -> None:
        """After a write to `dest` by the writer `key`, read from `source` (or when it
        drains: no source): pause or resume sources."""
        if dest.congested:
            if self.blocked and dest.gate.owner != self.exempt:
                self._owner_changed(dest)
            if (
                source is not None
                and source is not dest.owner
                and source not in self.blocked
                and source not in self.owner_blocked
            ):
                if key is None or key != dest.gate.owner:
                    self.blocked[source] = key
                    self.exempt = dest.gate.owner
                    source.block(dest)
                elif dest.backlogged:
                    self.owner_blocked[source] = None
                    source.block(dest)
        elif self.blocked:
            self.release_all(dest)
        if self.owner_blocked and not dest.backlogged:
            owners, self.owner_blocked = self.owner_blocked, {}
            for owner in owners:
                owner.unblock(dest)

    def _owner_changed(self, dest: Dest) -> None:
        owner = self.exempt = dest.gate.owner
        for source, key in list(self.blocked.items()):
            if isinstance(source, LinkSource):
                source.block(dest)  # again: names the stream that may go on
            elif key is not None and key == owner:
                del self.blocked[source]
                if dest.backlogged:
                    self.owner_blocked[source] = None
                else:
                    source.unblock(dest)

    def release_all(self, dest: Dest) -> None:
        blocked, self.blocked = self.blocked, {}
        self.exempt = None
        owners, self.owner_blocked = self.owner_blocked, {}
        for source in blocked:
            source.unblock(dest)
        for owner in owners:
            owner.unblock(dest)
