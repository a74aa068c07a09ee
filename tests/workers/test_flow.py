"""FlowControl (msrpd/workers/flow.py) on its own: every source it pauses is resumed once the
destination drains, whichever way it was paused (for frames held behind a stream, or for
backlog only as the stream's owner), however the gate's owner changes meanwhile.

A source paused and forgotten never reads again: its sender's frame hangs half read (a
`both_ways` round of tests/integration/test_flow_cycle.py, 1 run in ~20 under load)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from msrpd.workers.flow import FlowControl
from msrpd.workers.gate import FrameGate


class Source:
    """A connection or handoff link that relays into the destination (ports.Blockable)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.blocked: list[Hashable] = []

    def block(self, dest: Hashable) -> None:
        self.blocked.append(dest)

    def unblock(self, dest: Hashable) -> None:
        self.blocked.remove(dest)


@dataclass(eq=False)
class Dest:
    """A destination's output (flow.Dest): whose stream it writes, how full it is."""

    gate: FrameGate = field(default_factory=FrameGate)  # only its owner is read
    owner: object = None
    congested: bool = False
    backlogged: bool = False

    def __hash__(self) -> int:
        return id(self)

    def fill(self, stream: Hashable) -> None:
        self.gate.owner, self.congested, self.backlogged = stream, True, True

    def drain(self) -> None:
        self.gate.owner, self.congested, self.backlogged = None, False, False


def test_two_stream_owners_paused_for_backlog_both_resume() -> None:
    """Alice's stream owns the output and its backlog pauses her; her stream ends and Bob's
    (held behind it) owns the output, still backlogged: his pauses him too. Both resume when
    it drains: the second pause must not replace the first."""
    flow, dest = FlowControl(), Dest()
    alice, bob = Source("alice"), Source("bob")
    dest.fill("a")
    flow.check(dest, "a", alice)
    assert alice.blocked == [dest]
    dest.fill("b")
    flow.check(dest, "b", bob)
    assert bob.blocked == [dest]
    dest.drain()
    flow.check(dest)
    assert (alice.blocked, bob.blocked, flow.active) == ([], [], False)


def test_a_held_source_that_becomes_owner_keeps_the_paused_owner() -> None:
    """Alice is paused for backlog as the owner; Carol, paused behind her stream, becomes the
    owner while it is still backlogged: both stay paused for backlog, both resume on drain."""
    flow, dest = FlowControl(), Dest()
    alice, carol = Source("alice"), Source("carol")
    dest.fill("a")
    flow.check(dest, "c", carol)  # Carol's frame waits behind Alice's stream
    flow.check(dest, "a", alice)  # Alice's own backlog
    assert (alice.blocked, carol.blocked) == ([dest], [dest])
    dest.fill("c")
    flow.check(dest)  # Alice's stream ended, Carol's goes on: still backlogged
    dest.drain()
    flow.check(dest)
    assert (alice.blocked, carol.blocked, flow.active) == ([], [], False)


def test_release_all_lets_every_backlog_pause_go() -> None:
    flow, dest = FlowControl(), Dest()
    alice, bob = Source("alice"), Source("bob")
    dest.fill("a")
    flow.check(dest, "a", alice)
    dest.fill("b")
    flow.check(dest, "b", bob)
    flow.release_all(dest)
    assert (alice.blocked, bob.blocked, flow.active) == ([], [], False)
