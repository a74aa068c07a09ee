"""A retiring worker's handover fences first (handover.py, step 4), driven with a recording
stand-in for the context: MOVING waits for every other live worker's FENCE_ACK and follows
the frames forwarded for the old id; RELEASE follows MOVING and the second round of answers;
a worker given up on has its late answer ignored; an EXITING worker is not fenced, nor
waited for once it turns EXITING. Also the
batch datagram's framing (balance.py)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from msrpd.shm import WorkerState
from msrpd.workers.balance import _split_batch, batch_message
from msrpd.workers.context import WorkerIdentity
from msrpd.workers.handoff import Handoff, HandoffKind, make_conid
from msrpd.workers.handover import MOVED_TIMEOUT, Handover, worker_token

ME, NEW = (0, 1), (0, 2)
OLD = make_conid(0, 1, 7)
NEW_ID = make_conid(0, 2, 3)


@dataclass
class Record:
    slot: int
    generation: int
    state: WorkerState
    pid: int = 1


@dataclass
class Ctx:
    """Records every message the handover sends, in order, as (worker, kind, conid)."""

    records: list[Record]
    log: list[tuple[tuple[int, int], str, int]] = field(default_factory=list)
    forwarded: list[tuple[int, object]] = field(default_factory=list)
    """(token, source) of each frame forwarded to a moved connection (a GONE goes back)."""

    def __post_init__(self) -> None:
        self.ident = WorkerIdentity(*ME, 0)
        self.shm = self
        self.heartbeats = self
        self.hub = self
        self.counters = self
        self.handoffs = self  # HandoffOut: paths, control messages, the GONE memory
        self.sent = self

    def live(self) -> list[Record]:
        return self.records

    def path(self, slot: int, generation: int) -> Path:
        return Path(f"/h/{slot}-{generation}")

    def control(
        self, worker: tuple[int, int], kind: HandoffKind, conid: int, token: int = 0, payload=b""
    ) -> None:
        self.log.append((worker, kind.name, conid))

    def send(self, path: Path, conid: int, token: int, parts: list[bytes], flags: int) -> None:
        slot, generation = path.name.split("-")
        self.log.append(((int(slot), int(generation)), "FRAME " + parts[0].decode(), conid))

    def new_token(self, record: object = None) -> int:
        return 1

    def note_forward(self, token: int, source: object) -> None:
        self.forwarded.append((token, source))

    def note_moved(self, old: int, path: Path, new: int) -> None:
        pass

    def add(self, *args: object) -> None:
        pass

    # cmap and registry: each purge, as the set of ids it was given
    purged: list[tuple[str, set[int]]] = field(default_factory=list)

    @property
    def cmap(self) -> _Table:
        return _Table("cmap", self.purged)

    @property
    def registry(self) -> _Table:
        return _Table("registry", self.purged)


@dataclass
class _Table:
    name: str
    purged: list[tuple[str, set[int]]]

    def purge(self, conids: set[int]) -> int:
        self.purged.append((self.name, set(conids)))
        return 0


def _handover(live: list[Record]) -> tuple[Handover, Ctx, list[int]]:
    ctx = Ctx(live)
    unlocked: list[int] = []
    handover = Handover(cast(Any, ctx), cast(Any, None), lambda: unlocked.append(1))
    return handover, ctx, unlocked


def _ack(handover: Handover, worker: tuple[int, int]) -> None:
    handover.on_control(Handoff(HandoffKind.FENCE_ACK, OLD, worker_token(*worker)), None)


def _moved(handover: Handover) -> None:
    handover.on_control(Handoff(HandoffKind.MOVED, OLD, 0, struct.pack("!Q", NEW_ID)), None)


LIVE = [
    Record(0, 1, WorkerState.DRAINING),  # this worker
    Record(1, 1, WorkerState.DRAINING),
    Record(0, 2, WorkerState.RUNNING),  # the new owner
    Record(1, 2, WorkerState.RUNNING),
    Record(1, 0, WorkerState.EXITING),  # done: nothing to wait for
    Record(2, 0, WorkerState.RUNNING, pid=0),
]


def test_moving_waits_for_every_fence_and_release_for_moving() -> None:
    handover, ctx, unlocked = _handover(LIVE)
    handover.sent(OLD, NEW, fence_first=True)
    assert sorted(ctx.log) == [((1, 1), "FENCE", OLD), ((1, 2), "FENCE", OLD)]
    ctx.log.clear()
    assert handover.deliver(OLD, b"f1", 0, "src")  # queued until MOVED
    _moved(handover)  # forwards the queue, fences again for RELEASE
    assert ctx.log[0] == (NEW, "FRAME f1", NEW_ID)
    assert sorted(ctx.log[1:]) == [((1, 1), "FENCE", OLD), ((1, 2), "FENCE", OLD)]
    ctx.log.clear()
    _ack(handover, (1, 1))
    assert handover.deliver(OLD, b"f2", 0, "src")  # forwarded at once now
    assert ctx.log == [(NEW, "FRAME f2", NEW_ID)]
    _ack(handover, (1, 2))  # the last first-round answer: MOVING, not yet RELEASE
    assert ctx.log[-1] == (NEW, "MOVING", OLD)
    _ack(handover, (1, 2))
    assert ctx.log[-1] == (NEW, "MOVING", OLD) and unlocked == []
    _ack(handover, (1, 1))
    assert ctx.log[-1] == (NEW, "RELEASE", NEW_ID) and unlocked == [1]
    assert not handover.busy()


def test_without_other_workers_moving_goes_at_once() -> None:
    handover, ctx, _unlocked = _handover([Record(0, 1, WorkerState.DRAINING)])
    handover.sent(OLD, NEW, fence_first=True)
    assert ctx.log == [(NEW, "MOVING", OLD)]


def test_a_late_answer_is_not_taken_for_the_release_fence() -> None:
    handover, ctx, unlocked = _handover(LIVE)
    handover.sent(OLD, NEW, fence_first=True)
    _ack(handover, (1, 2))
    _moved(handover)
    handover.moving[OLD].pre_fence_by = 0.0  # (1, 1) does not answer in time
    ctx.log.clear()
    handover.tick()
    assert ctx.log == [(NEW, "MOVING", OLD)]
    _ack(handover, (1, 2))  # its release-fence answer
    _ack(handover, (1, 1))  # the late first answer: ignored
    assert ctx.log[-1] == (NEW, "MOVING", OLD) and unlocked == []
    _ack(handover, (1, 1))
    assert ctx.log[-1] == (NEW, "RELEASE", NEW_ID) and unlocked == [1]


def test_a_worker_that_exits_is_not_waited_for() -> None:
    live = [Record(r.slot, r.generation, r.state, r.pid) for r in LIVE]
    handover, ctx, unlocked = _handover(live)
    handover.sent(OLD, NEW, fence_first=True)
    _moved(handover)
    _ack(handover, (1, 2))
    ctx.log.clear()
    handover.tick()  # (1, 1) still DRAINING: wait for it
    assert ctx.log == []
    live[1].state = WorkerState.EXITING  # it retired meanwhile: nothing left to send
    handover.tick()
    assert ctx.log == [(NEW, "MOVING", OLD)]
    _ack(handover, (1, 2))
    assert ctx.log[-1] == (NEW, "RELEASE", NEW_ID) and unlocked == [1]


def test_batch_framing_round_trips_and_refuses_truncation() -> None:
    messages = [b'{"old": 1}\n', b"", b'{"old": 2}\nMSRP a SEND\r\n']
    datagram = batch_message(messages)
    assert datagram[:1] == b"B"
    assert _split_batch(datagram[1:]) == messages
    assert _split_batch(b"") == []  # no states: the receiver refuses it for its descriptors
    for cut in (3, 6, len(datagram) - 2):
        with pytest.raises(ValueError, match="truncated"):
            _split_batch(datagram[1:cut])


OLD2 = make_conid(0, 1, 8)


def _timed_out(handover: Handover) -> None:
    """MOVED_TIMEOUT has passed since each socket was sent; one tick."""
    for moving in handover.moving.values():
        moving.since -= MOVED_TIMEOUT + 0.1
        moving.deadline = moving.since + MOVED_TIMEOUT
    handover.tick()


def test_a_slow_new_owner_is_waited_for_and_a_dead_one_purged_once() -> None:
    """No MOVED within MOVED_TIMEOUT: while the new owner's pid is the one it had, it is
    slow, not dead: nothing is purged, the queue waits, the lock stays (review 1.7). Once
    another process holds its slot, both old ids go in one purge per table."""
    live = [Record(0, 1, WorkerState.DRAINING), Record(0, 2, WorkerState.RUNNING, pid=42)]
    handover, ctx, unlocked = _handover(live)
    handover.sent(OLD, NEW)
    handover.sent(OLD2, NEW)
    assert handover.deliver(OLD, b"f1", 0, "src")
    _timed_out(handover)
    assert ctx.purged == [] and unlocked == [] and set(handover.moving) == {OLD, OLD2}
    assert handover.moving[OLD].queue == [(b"f1", 0, "src", None)]
    live[1].pid = 43  # it died and was respawned
    _timed_out(handover)
    assert ctx.purged == [("cmap", {OLD, OLD2}), ("registry", {OLD, OLD2})]
    assert unlocked == [1, 1] and handover.moving == {}
