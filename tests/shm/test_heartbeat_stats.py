"""Heartbeats and Stats across processes: one writer per slot, lock-free readers."""

from __future__ import annotations

import functools
import os
import time

import pytest

from msrpd.shm import (
    COUNTERS,
    GAUGES,
    Counter,
    Heartbeats,
    ShmLayoutError,
    Stats,
    StatsCounters,
    WorkerState,
)
from msrpd.shm.heartbeat import _BODY as HB_BODY
from msrpd.shm.seqlock import write_begin

from ..forking import Children


def test_counter_enum_matches_counters() -> None:
    assert [c.name for c in Counter] == list(COUNTERS)
    assert [int(c) for c in Counter] == list(range(len(COUNTERS)))
    assert len(COUNTERS) == 61 and GAUGES.issubset(COUNTERS)
    c = StatsCounters()
    c.add(Counter.frames_out)
    c.add(Counter.bytes_in, 100)
    c.values[Counter.bytes_in] += 1
    assert c.as_dict()["bytes_in"] == 101 and c.as_dict()["frames_out"] == 1


def test_the_tally_lands_in_its_counters() -> None:
    """Each of the tally's counts (shm/tally.py) is added to the counter of its name, once:
    a distinct count each, twice folded, then nothing more."""
    c = StatsCounters()
    tally = c.tally
    names = [
        ("frames_in_send", "in_send"),
        ("frames_in_report", "in_report"),
        ("frames_in_auth", "in_auth"),
        ("frames_in_other", "in_other"),
        ("frames_in_response", "in_response"),
        ("frames_out", "frames_out"),
        ("replies_2xx", "replies_2xx"),
        ("replies_4xx", "replies_4xx"),
        ("replies_5xx", "replies_5xx"),
        ("bytes_in", "bytes_in"),
        ("bytes_out", "bytes_out"),
    ]
    for n, (_, attr) in enumerate(names, 1):
        setattr(tally, attr, n)
    c.add(Counter.bytes_out, 1000)
    first = c.as_dict()
    for n, (_, attr) in enumerate(names, 1):
        setattr(tally, attr, 100 * n)
    second = c.as_dict()
    assert c.as_dict() == second  # folded once: the tally was zeroed
    expected = {name: n for n, (name, _) in enumerate(names, 1)}
    expected["bytes_out"] += 1000
    assert {k: v for k, v in first.items() if v} == expected
    assert {k: v for k, v in second.items() if v} == {
        name: n + 100 * n + (1000 if name == "bytes_out" else 0)
        for n, (name, _) in enumerate(names, 1)
    }


def test_heartbeats_across_processes(prefix: str, children: Children) -> None:
    hb = Heartbeats.create(prefix, 4)
    try:
        assert [r.state for r in hb.all()] == [WorkerState.FREE] * 4
        before = time.monotonic_ns()
        hb.claim(2, 0, slot=1, generation=3)  # before fork: pid not known yet
        go_r, go_w = os.pipe()

        def worker() -> None:
            mine = Heartbeats.attach(prefix, 4)
            assert os.read(go_r, 1) == b"g"
            for conns in range(1, 4):
                mine.beat(2, WorkerState.RUNNING, conns)
            mine.close()

        pid = children.fork(worker)
        hb.claim(2, pid, slot=1, generation=3)
        assert hb.read(2).state == WorkerState.BOOTING
        os.write(go_w, b"g")
        assert children.wait(pid) == 0
        os.close(go_r)
        os.close(go_w)
        rec = hb.read(2)
        assert (rec.index, rec.pid, rec.slot, rec.generation, rec.conns) == (2, pid, 1, 3, 3)
        assert rec.state == WorkerState.RUNNING and rec.consistent
        assert before <= rec.beat <= time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide
        hb.release(2)
        assert hb.read(2).state == WorkerState.FREE and hb.read(2).pid == 0
        with pytest.raises(IndexError):
            hb.beat(4, WorkerState.RUNNING, 0)
        with pytest.raises(ShmLayoutError):
            Heartbeats.attach(prefix, 5)
    finally:
        hb.close()
        hb.unlink()


def test_heartbeat_reads_under_a_busy_writer_are_consistent(
    prefix: str, children: Children
) -> None:
    """A child beats flat out with beat == 1000 * conns; every consistent copy must agree."""
    hb = Heartbeats.create(prefix, 1)
    try:
        hb.claim(0, 1, 0, 1)

        def writer() -> None:
            mine = Heartbeats.attach(prefix, 1)
            for n in range(1, 200_000):
                mine.beat(0, WorkerState.RUNNING, n, now_ns=1000 * n)

        pid = children.fork(writer)
        consistent = 0
        while children.live and consistent < 20_000:
            rec = hb.read(0)
            if rec.consistent and rec.state == WorkerState.RUNNING:  # not the claim's copy
                consistent += 1
                assert rec.beat == 1000 * rec.conns
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.live.discard(pid)
        assert consistent > 0
    finally:
        hb.close()
        hb.unlink()


def test_heartbeat_writer_killed_mid_write_is_reported_then_healed(prefix: str) -> None:
    hb = Heartbeats.create(prefix, 2)
    try:
        hb.claim(0, 123, 0, 1)
        write_begin(hb._buf, 0)  # a writer that died here leaves the sequence odd
        HB_BODY.pack_into(hb._buf, 8, 123, 1, 9, 0, 2, 5)
        rec = hb.read(0)
        assert not rec.consistent and rec.pid == 123  # readers still get whole fields
        hb.beat(0, WorkerState.RUNNING, 4)
        assert hb.read(0).consistent and hb.read(0).conns == 4
    finally:
        hb.close()
        hb.unlink()


def test_stats_publish_total_per_slot(prefix: str, children: Children) -> None:
    stats = Stats.create(prefix, 3)
    try:

        def worker(index: int) -> None:
            mine = Stats.attach(prefix, 3)
            c = StatsCounters()
            for _ in range(1000):
                if _ % 2:  # half through the tally (shm/tally.py), folded in by publish
                    c.tally.in_send += 1
                else:
                    c.add(Counter.frames_in_send)
                c.tally.bytes_in += 10
                if _ % 100 == 0:
                    mine.publish(index, c)
            c.values[Counter.conns_open] = index + 1
            mine.publish(index, c)
            mine.close()

        pids = [children.fork(functools.partial(worker, i)) for i in range(3)]
        assert [children.wait(pid) for pid in pids] == [0, 0, 0]
        total = stats.total()
        assert total["frames_in_send"] == 3000
        assert total["bytes_in"] == 30000
        assert total["conns_open"] == 1 + 2 + 3
        assert set(total) == set(COUNTERS)
        per = stats.per_slot()
        assert sorted(per) == [0, 1, 2]
        assert per[1]["frames_in_send"] == 1000 and per[1]["conns_open"] == 2
    finally:
        stats.close()
        stats.unlink()


def test_stats_reset_and_retire(prefix: str) -> None:
    stats = Stats.create(prefix, 2)
    try:
        a, b = StatsCounters(), StatsCounters()
        a.add(Counter.errors, 5)
        a.values[Counter.conns_open] = 4
        b.add(Counter.errors, 2)
        stats.publish(0, a)
        stats.publish(1, b)
        assert stats.total()["errors"] == 7
        stats.reset()
        assert stats.total()["errors"] == 0
        assert stats.total()["conns_open"] == 4  # a gauge is not reset
        a.add(Counter.errors, 1)  # the worker keeps publishing its own totals
        stats.publish(0, a)
        assert stats.per_slot()[0]["errors"] == 1
        stats.retire(0)  # worker 0 exited and was reaped
        assert stats.total()["errors"] == 1  # its counts stay in the total ...
        assert stats.total()["conns_open"] == 0  # ... but not its open connections
        assert stats.per_slot()[0]["errors"] == 0
        fresh = StatsCounters()  # its replacement starts from zero in the same slot
        fresh.add(Counter.errors, 3)
        stats.publish(0, fresh)
        assert stats.total()["errors"] == 4
        stats.reset()
        assert stats.total()["errors"] == 0
        b.add(Counter.errors, 10)
        stats.publish(1, b)
        assert stats.total()["errors"] == 10
    finally:
        stats.close()
        stats.unlink()


def test_live_lists_claimed_records_and_conns_follow_set_conns(prefix: str) -> None:
    hb = Heartbeats.create(prefix, 64)
    try:
        for index, pid in ((2, 200), (17, 1700), (63, 6300)):
            hb.claim(index, pid, index % 4, 3)
        hb.release(17)
        hb.set_conns(63, 41)
        live = hb.live()
        assert [(r.index, r.pid, r.slot, r.generation) for r in live] == [
            (2, 200, 2, 3),
            (63, 6300, 3, 3),
        ]
        assert [r.index for r in hb.all() if r.pid] == [2, 63]
        assert (hb.conns(63), hb.read(63).conns, hb.conns(2)) == (41, 41, 0)
    finally:
        hb.close()
        hb.unlink()


def test_serial_mark_is_set_read_and_cleared_without_the_seqlock(prefix: str) -> None:
    """The connection-id mark (workers/conids.py) is read whole even when the record's
    seqlock was left odd by a worker killed mid-beat, and beats never touch it."""
    hb = Heartbeats.create(prefix, 3)
    try:
        assert [hb.serial_mark(i) for i in range(3)] == [0, 0, 0]
        hb.claim(1, 0, slot=0, generation=1)
        hb.reserve_serials(1, 1)  # the supervisor, before fork
        hb.claim(1, 77, slot=0, generation=1)  # after fork: leaves the mark alone
        hb.reserve_serials(1, (1 << 40) + 5)
        write_begin(hb._buf, 40)  # killed inside a beat
        hb.beat(0, WorkerState.RUNNING, 3)
        assert hb.serial_mark(1) == (1 << 40) + 5
        assert [hb.serial_mark(0), hb.serial_mark(2)] == [0, 0]
        assert hb.read(1).pid == 77 and not hb.read(1).consistent
        hb.release(1)
        assert hb.serial_mark(1) == 0 and hb.read(1).state == WorkerState.FREE
    finally:
        hb.close()
        hb.unlink()
