"""RemoteFlow (msrpd/workers/remoteflow.py): per-destination PAUSE/RESUME across workers,
never a paused link (issue 12, item 11)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, cast

from msrpd.workers.flow import FlowControl, LinkSource
from msrpd.workers.gate import FrameGate
from msrpd.workers.ports import WRITE_HIGH
from msrpd.workers.remoteflow import RemoteFlow


class _Source:
    def __init__(self) -> None:
        self.blockers: list[Hashable] = []

    def block(self, dest: Hashable) -> None:
        self.blockers.append(dest)

    def unblock(self, dest: Hashable) -> None:
        self.blockers.remove(dest)


class _Link:
    def __init__(self) -> None:
        self.sent: list[tuple[bool, int, int]] = []

    def send_flow(self, pause: bool, conid: int, token: int = 0) -> None:
        self.sent.append((pause, conid, token))


def test_a_source_relaying_into_a_paused_conid_waits_for_resume() -> None:
    flow, alice, carol, link = RemoteFlow(), _Source(), _Source(), object()
    flow.throttle(7, 1, alice)  # not paused: goes on
    assert alice.blockers == []
    flow.on_flow(True, 7, 0, link)
    flow.throttle(7, 2, alice)
    flow.throttle(7, 3, alice)  # paused once, however many frames it still had read
    flow.throttle(8, 4, carol)  # another destination is not held up
    assert alice.blockers == [("handoff", 7)] and carol.blockers == []
    flow.on_flow(False, 7, 0, link)
    assert alice.blockers == [] and not flow.blocked and not flow.paused


def test_the_stream_the_far_end_is_writing_goes_on() -> None:
    flow, owner, other, link = RemoteFlow(), _Source(), _Source(), object()
    flow.on_flow(True, 7, 0, link)
    flow.throttle(7, 5, owner)
    flow.throttle(7, 6, other)
    assert owner.blockers == other.blockers == [("handoff", 7)]
    flow.on_flow(True, 7, 5, link)  # the far end's gate now writes stream 5: it must go on
    assert owner.blockers == [] and other.blockers == [("handoff", 7)]
    flow.throttle(7, 5, owner)  # its next pieces are not paused
    assert owner.blockers == []


def test_a_lost_link_releases_what_its_pauses_held() -> None:
    flow, alice, link, other_link = RemoteFlow(), _Source(), object(), object()
    flow.on_flow(True, 7, 0, link)
    flow.on_flow(True, 9, 0, other_link)
    flow.throttle(7, 1, alice)
    flow.throttle(9, 2, alice)
    flow.link_lost(link)
    assert alice.blockers == [("handoff", 9)] and list(flow.paused) == [9]


def test_a_link_source_names_its_own_stream_as_the_one_that_goes_on() -> None:
    link = _Link()
    source = LinkSource(link, 42)

    class _Dest:
        gate = FrameGate()

    dest = _Dest()
    dest.gate.owner = (id(link), 77)
    source.block(dest)
    dest.gate.owner = (id(object()), 78)  # another link's stream: nothing of ours goes on
    source.block(dest)
    source.unblock(dest)
    assert link.sent == [(True, 42, 77), (True, 42, 0), (False, 42, 0)]


class _Dest:
    """What FlowControl reads of a destination connection."""

    def __init__(self) -> None:
        self.owner = object()  # the connection it writes for
        self.gate = FrameGate()
        self.held = 0  # bytes waiting behind the gate owner's stream
        self.backlog = 0  # bytes waiting to be written

    @property
    def congested(self) -> bool:
        return self.held + self.backlog > WRITE_HIGH

    @property
    def backlogged(self) -> bool:
        return self.backlog > WRITE_HIGH


def _check(flow: FlowControl, dest: _Dest, source: object, key: object) -> None:
    flow.check(cast(Any, dest), key, cast(Any, source))


def test_the_streams_writer_is_not_paused_for_what_waits_behind_it() -> None:
    dest = _Dest()
    flow = FlowControl()
    alice, carol = _Source(), _Source()
    dest.gate.owner = "alice"  # Alice's streamed frame is being written
    dest.held = 2 * WRITE_HIGH  # Carol's frames wait for its end-line
    _check(flow, dest, carol, "carol")
    _check(flow, dest, alice, "alice")
    assert carol.blockers == [dest] and alice.blockers == []  # Alice goes on: Carol waits for her
    dest.backlog = 2 * WRITE_HIGH  # now Alice's own bytes pile up: she pauses too
    _check(flow, dest, alice, "alice")
    assert alice.blockers == [dest]
    dest.backlog = 0  # written out, Carol's still held: Alice resumes, Carol does not
    flow.check(cast(Any, dest))
    assert alice.blockers == [] and carol.blockers == [dest]
    dest.gate.owner, dest.held = "carol", 0  # Alice's end-line is out: Carol's frame is written
    flow.check(cast(Any, dest))
    assert carol.blockers == []


def test_a_paused_source_that_becomes_the_writer_resumes() -> None:
    dest = _Dest()
    flow = FlowControl()
    alice, bob, carol = _Source(), _Source(), _Source()
    dest.gate.owner, dest.held = "alice", 3 * WRITE_HIGH
    _check(flow, dest, bob, "bob")
    _check(flow, dest, carol, "carol")
    dest.gate.owner = "bob"  # Alice is done; Bob's stream is next, Carol's still waits
    _check(flow, dest, alice, "alice")
    assert bob.blockers == [] and carol.blockers == [dest]
    link = _Link()
    via_link = LinkSource(link, 5)
    _check(flow, dest, via_link, (id(link), 9))
    dest.gate.owner = (id(link), 9)  # the next stream came over a link: it is told it may go on
    _check(flow, dest, alice, "alice")
    assert link.sent == [(True, 5, 0), (True, 5, 9)]
