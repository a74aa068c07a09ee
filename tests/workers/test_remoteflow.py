"""RemoteFlow (msrpd/workers/remoteflow.py): per-destination PAUSE/RESUME across workers,
never a paused link (issue 12, item 11)."""

from __future__ import annotations

from collections.abc import Hashable

from msrpd.workers.flow import LinkSource
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

    class _Gate:
        owner: object = None

    class _Dest:
        gate = _Gate()

    dest = _Dest()
    dest.gate.owner = (id(link), 77)
    source.block(dest)
    dest.gate.owner = (id(object()), 78)  # another link's stream: nothing of ours goes on
    source.block(dest)
    source.unblock(dest)
    assert link.sent == [(True, 42, 77), (True, 42, 0), (False, 42, 0)]
