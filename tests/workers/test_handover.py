"""The handover state machine (msrpd/workers/migrate/handover.py), walked through every
transition with the time passed in: no sockets, no loop, no clock. Each test feeds the events
one side of a move sees and checks the actions the machine returns, in order."""

from __future__ import annotations

from msrpd.workers.handoff import HandoffFlags, HandoffKind, make_conid
from msrpd.workers.migrate.actions import (
    Action,
    Forward,
    HoldReading,
    Lost,
    NoteMoved,
    Peers,
    Purge,
    Release,
    Send,
    SetReleaseLink,
    StartReading,
    Unlock,
)
from msrpd.workers.migrate.handover import (
    FENCE_TIMEOUT,
    HOLD_TIMEOUT,
    MOVED_TIMEOUT,
    NEW_ID,
    TOMBSTONE,
    HandoverMachine,
    Phase,
)
from msrpd.workers.migrate.state import Worker, worker_token

ME, NEW, OTHER, THIRD = (0, 1), (0, 2), (1, 1), (1, 2)
OLD = make_conid(0, 1, 7)
OLD2 = make_conid(0, 1, 8)
NEW_ID_ = make_conid(0, 2, 3)
FENCE, ACK, MOVING = HandoffKind.FENCE, HandoffKind.FENCE_ACK, HandoffKind.MOVING
MOVED, RELEASE = HandoffKind.MOVED, HandoffKind.RELEASE
TOKEN = worker_token(*ME)
FWD, MORE = HandoffFlags.FORWARDED, HandoffFlags.MORE


def peers(*serving: Worker, pids: dict[Worker, int] | None = None) -> Peers:
    return Peers(pids if pids is not None else dict.fromkeys(serving, 1), frozenset(serving))


ALL = peers(ME, NEW, OTHER, THIRD)


class Conn:
    """What the new owner's side hands back: any object (the machine never touches it)."""


def machine() -> tuple[HandoverMachine[Conn], list[object]]:
    """A machine whose forwarding tokens count up from 100; the sources they were made for."""
    sources: list[object] = []

    def new_token(source: object, record: object) -> int:
        sources.append(source if record is None else (source, record))
        return 99 + len(sources)

    return HandoverMachine(ME, new_token), sources


def sends(actions: list[Action[Conn]]) -> set[tuple[Worker, HandoffKind, int]]:
    return {(a.worker, a.kind, a.conid) for a in actions if isinstance(a, Send)}


# -- the old owner --------------------------------------------------------------------------------


def test_a_colocation_move_from_sent_to_forgotten() -> None:
    m, sources = machine()
    assert m.sent(OLD, NEW, 0.0, ALL) == [Send(NEW, MOVING, OLD)]
    departure = m.departures[OLD]
    assert departure.phase is Phase.SENT and m.busy()
    assert m.frame(OLD, b"f1", FWD, "a", 0.1) == []  # queued until MOVED, FORWARDED dropped
    assert m.frame(OLD, memoryview(b"f2"), 0, "b", 0.2) == []
    assert departure.queue == [(b"f1", 0, "a", None), (b"f2", 0, "b", None)]
    out = m.moved(OLD, NEW_ID_, ALL, 1.0)
    assert out[:3] == [
        NoteMoved(OLD, NEW, NEW_ID_),
        Forward(NEW, NEW_ID_, 100, b"f1", FWD),
        Forward(NEW, NEW_ID_, 101, b"f2", FWD),
    ]
    assert sends(out[3:]) == {(OTHER, FENCE, OLD), (THIRD, FENCE, OLD)} and len(out) == 5
    assert sources == ["a", "b"] and departure.phase is Phase.FENCING
    assert m.fence_ack(OLD, OTHER, 1.1) == []
    # relay() to it passes the routed frame's record: a GONE for its token reports that one.
    out = m.pass_on(departure, b"f3", 0, "a", 1.2, "record-f3")
    assert out == [Forward(NEW, NEW_ID_, 102, b"f3", FWD)] and sources[-1] == ("a", "record-f3")
    assert m.fence_ack(OLD, THIRD, 1.3) == [Send(NEW, RELEASE, NEW_ID_), Unlock()]
    assert departure.phase is Phase.RELEASED and not m.busy()
    # Released: late frames still go on, and each keeps the record for TOMBSTONE more.
    assert m.frame(OLD, b"f4", 0, "a", 10.0) == [Forward(NEW, NEW_ID_, 103, b"f4", FWD)]
    assert m.tick(10.0 + TOMBSTONE - 0.1, ALL) == [] and OLD in m.departures
    assert m.tick(10.0 + TOMBSTONE + 0.1, ALL) == [] and m.departures == {}
    assert m.frame(OLD, b"f5", 0, "a", 50.0) is None  # unknown now: the caller says GONE


def test_pieces_of_one_streamed_frame_share_a_token() -> None:
    m, sources = machine()
    m.sent(OLD, NEW, 0.0, peers(ME, NEW))
    assert m.moved(OLD, NEW_ID_, peers(ME, NEW), 0.5)[-2:] == [
        Send(NEW, RELEASE, NEW_ID_),
        Unlock(),
    ]
    first = m.frame(OLD, b"head", MORE, "s", 1.0)
    piece = m.frame(OLD, b"piece", MORE, "s", 1.0)
    other = m.frame(OLD, b"whole", 0, "t", 1.0)
    end = m.frame(OLD, b"end", 0, "s", 1.0)
    again = m.frame(OLD, b"next", 0, "s", 1.0)
    tokens = [
        a[0].token for a in (first, piece, other, end, again) if a and isinstance(a[0], Forward)
    ]
    assert tokens == [100, 100, 101, 100, 102]
    assert sources == ["s", "t", "s"]


def test_moved_twice_or_for_an_unknown_id_is_ignored() -> None:
    m, _ = machine()
    assert m.moved(OLD, NEW_ID_, ALL, 0.0) == []
    assert m.fence_ack(OLD, OTHER, 0.0) == []
    m.sent(OLD, NEW, 0.0, ALL)
    m.moved(OLD, NEW_ID_, ALL, 0.1)
    assert m.moved(OLD, make_conid(0, 2, 9), ALL, 0.2) == []
    assert m.departures[OLD].new == NEW_ID_


def test_a_reload_move_fences_first_then_moving_then_release() -> None:
    m, _ = machine()
    live = peers(ME, NEW, OTHER, THIRD, (2, 0))
    out = m.sent(OLD, NEW, 0.0, live, fence_first=True)
    assert sends(out) == {(OTHER, FENCE, OLD), (THIRD, FENCE, OLD), ((2, 0), FENCE, OLD)}
    assert all(isinstance(a, Send) and a.token == TOKEN for a in out)
    assert m.departures[OLD].phase is Phase.FENCING_FIRST
    assert m.frame(OLD, b"f1", 0, "src", 0.1) == []
    out = m.moved(OLD, NEW_ID_, live, 0.2)  # MOVED may come before MOVING is sent
    assert out[1] == Forward(NEW, NEW_ID_, 100, b"f1", FWD)
    assert sends(out) == {(OTHER, FENCE, OLD), (THIRD, FENCE, OLD), ((2, 0), FENCE, OLD)}
    assert Send(NEW, RELEASE, NEW_ID_) not in out  # RELEASE must not overtake MOVING
    assert m.fence_ack(OLD, OTHER, 0.3) == []
    assert m.frame(OLD, b"f2", 0, "src", 0.3) == [Forward(NEW, NEW_ID_, 101, b"f2", FWD)]
    assert m.fence_ack(OLD, (2, 0), 0.3) == []
    assert m.fence_ack(OLD, THIRD, 0.3) == [Send(NEW, MOVING, OLD)]  # the last first answer
    assert m.departures[OLD].phase is Phase.FENCING
    assert m.fence_ack(OLD, THIRD, 0.4) == []
    assert m.fence_ack(OLD, (2, 0), 0.4) == []
    assert m.fence_ack(OLD, OTHER, 0.5) == [Send(NEW, RELEASE, NEW_ID_), Unlock()]


def test_alone_a_reload_move_sends_moving_at_once() -> None:
    m, _ = machine()
    assert m.sent(OLD, NEW, 0.0, peers(ME, NEW), fence_first=True) == [Send(NEW, MOVING, OLD)]


def test_a_first_fence_given_up_on_has_its_late_answer_ignored() -> None:
    m, _ = machine()
    m.sent(OLD, NEW, 0.0, peers(ME, NEW, OTHER, THIRD), fence_first=True)
    m.fence_ack(OLD, THIRD, 0.1)
    m.moved(OLD, NEW_ID_, ALL, 0.2)
    assert m.tick(FENCE_TIMEOUT - 0.1, ALL) == []  # OTHER may still answer
    assert m.tick(FENCE_TIMEOUT + 0.1, ALL) == [Send(NEW, MOVING, OLD)]  # given up on
    assert m.fence_ack(OLD, THIRD, 1.2) == []  # its release-fence answer
    assert m.fence_ack(OLD, OTHER, 1.3) == []  # the late first answer: ignored
    assert m.fence_ack(OLD, OTHER, 1.4) == [Send(NEW, RELEASE, NEW_ID_), Unlock()]


def test_a_fenced_worker_that_exits_is_not_waited_for() -> None:
    m, _ = machine()
    m.sent(OLD, NEW, 0.0, ALL, fence_first=True)
    m.moved(OLD, NEW_ID_, ALL, 0.1)
    m.fence_ack(OLD, THIRD, 0.2)
    assert m.tick(0.5, ALL) == []  # OTHER still serves: wait for it
    gone = peers(ME, NEW, THIRD)  # OTHER turned EXITING (or died): nothing left to send
    assert m.tick(0.6, gone) == [Send(NEW, MOVING, OLD)]
    assert m.fence_ack(OLD, THIRD, 0.7) == [Send(NEW, RELEASE, NEW_ID_), Unlock()]


def test_missing_release_fence_answers_are_given_up_after_the_fence_timeout() -> None:
    m, _ = machine()
    m.sent(OLD, NEW, 0.0, ALL)
    m.moved(OLD, NEW_ID_, ALL, 1.0)
    m.fence_ack(OLD, THIRD, 1.1)
    assert m.tick(1.0 + FENCE_TIMEOUT - 0.1, ALL) == []
    assert m.tick(1.0 + FENCE_TIMEOUT + 0.1, ALL) == [Send(NEW, RELEASE, NEW_ID_), Unlock()]
    assert m.departures[OLD].phase is Phase.RELEASED


def test_a_new_owner_that_died_fails_the_queue_and_is_purged_once() -> None:
    """Peer gone: no MOVED within MOVED_TIMEOUT, and another process holds its slot (or none
    does): the queue is lost, the lock goes back, and both old ids go in one purge."""
    m, _ = machine()
    m.sent(OLD, NEW, 0.0, peers(ME, NEW, pids={ME: 1, NEW: 42}))
    m.sent(OLD2, NEW, 0.0, peers(ME, NEW, pids={ME: 1, NEW: 42}))
    m.frame(OLD, b"f1", 0, "src", 0.1)
    respawned = peers(ME, NEW, pids={ME: 1, NEW: 43})
    out = m.tick(MOVED_TIMEOUT + 0.1, respawned)
    assert out == [Lost(OLD, 1), Unlock(), Lost(OLD2, 0), Unlock(), Purge(frozenset({OLD, OLD2}))]
    assert m.departures == {} and not m.busy()


def test_a_slow_new_owner_is_waited_for_then_its_queue_is_failed_without_a_purge() -> None:
    """Timeout, or refused: a new owner that lives but never answers (it closed a socket it
    could not take, or it is very slow) keeps the lock until HOLD_TIMEOUT; then the queue is
    failed, and its entries are left (it may still rebind them)."""
    m, _ = machine()
    alive = peers(ME, NEW, pids={ME: 1, NEW: 42})
    m.sent(OLD, NEW, 0.0, alive)
    m.frame(OLD, b"f1", 0, "src", 0.1)
    for now in (MOVED_TIMEOUT + 0.1, MOVED_TIMEOUT + 1.2, HOLD_TIMEOUT - 0.5):
        assert m.tick(now, alive) == [], now
    assert m.departures[OLD].queue == [(b"f1", 0, "src", None)]
    assert m.tick(HOLD_TIMEOUT + 0.6, alive) == [Lost(OLD, 1), Unlock()]
    assert m.departures == {}


def test_a_new_owner_of_unknown_pid_is_judged_by_the_one_seen_later() -> None:
    m, _ = machine()
    m.sent(OLD, NEW, 0.0, peers(ME))  # not in the table yet: pid 0
    assert m.tick(MOVED_TIMEOUT + 0.1, peers(ME, NEW, pids={ME: 1, NEW: 7})) == []
    assert m.tick(MOVED_TIMEOUT + 1.2, peers(ME)) == [
        Lost(OLD, 0),
        Unlock(),
        Purge(frozenset({OLD})),
    ]


# -- any worker ---------------------------------------------------------------------------------


def test_a_fence_is_answered_to_whoever_asked() -> None:
    m, _ = machine()
    assert m.fence(OLD, NEW) == [Send(NEW, ACK, OLD, TOKEN)]


# -- the new owner --------------------------------------------------------------------------------


def test_taken_over_before_moving_holds_reading_until_moving_then_writes_at_release() -> None:
    m, _ = machine()
    conn, link = Conn(), object()
    out = m.taken_over(conn, OLD, ME, NEW_ID_, 0.0)
    assert out == [Send(ME, MOVED, OLD, 0, NEW_ID.pack(NEW_ID_)), HoldReading(conn)]
    assert m.busy()
    assert m.moving(OLD, link, 0.1) == [StartReading(conn, link)]
    assert m.busy()  # frames are still held back
    assert m.release(NEW_ID_) == [Release(NEW_ID_)]
    assert not m.busy()


def test_moving_before_the_socket_lets_it_read_at_once() -> None:
    m, _ = machine()
    conn, link = Conn(), object()
    assert m.moving(OLD, link, 0.0) == []
    assert m.taken_over(conn, OLD, ME, NEW_ID_, 0.1)[1:] == [SetReleaseLink(conn, link)]
    assert m.waiting == {}


def test_the_new_owner_gives_up_waiting_for_moving_and_for_release() -> None:
    m, _ = machine()
    conn = Conn()
    m.taken_over(conn, OLD, ME, NEW_ID_, 0.0)
    assert m.tick(HOLD_TIMEOUT - 0.1, ALL) == []
    out = m.tick(HOLD_TIMEOUT + 0.1, ALL)
    assert out == [StartReading(conn, None), Release(NEW_ID_)]  # the old worker is gone
    assert not m.busy()


def test_a_moving_whose_socket_never_came_is_forgotten() -> None:
    m, _ = machine()
    m.moving(OLD, object(), 0.0)
    m.tick(MOVED_TIMEOUT - 0.1, ALL)
    assert OLD in m.arrived
    m.tick(MOVED_TIMEOUT + 0.1, ALL)
    assert m.arrived == {}
    conn = Conn()
    assert m.taken_over(conn, OLD, ME, NEW_ID_, 6.0)[1:] == [HoldReading(conn)]
