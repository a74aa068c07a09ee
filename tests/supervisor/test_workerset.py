"""WorkerSet: readiness from the heartbeats, the signals a worker gets (retire, missed
heartbeats, retire_timeout), free process slots, and what `core.ps` shows; the workers here
are real processes (sleep), so every signal is really delivered."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from msrpd.control.methods import WorkerInfo
from msrpd.errors import HaltSupervisor
from msrpd.shm import ShmSet, WorkerState
from msrpd.supervisor.workerset import WorkerProc, WorkerSet
from msrpd.workers.context import WorkerIdentity


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def enlist(
    ws: WorkerSet, shm: ShmSet, popen: subprocess.Popen[bytes], slot: int, gen: int
) -> WorkerProc:
    index = ws.free_index()
    shm.heartbeats.claim(index, popen.pid, slot, gen)
    proc = WorkerProc(popen.pid, WorkerIdentity(slot, gen, index), time.monotonic())
    ws.procs[popen.pid] = proc
    return proc


def test_a_generation_is_ready_once_all_its_workers_run(
    shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ws = WorkerSet(shm.heartbeats, 8)
    ws.generation = 1
    a, b = (enlist(ws, shm, p, slot, 1) for slot, p in enumerate(sleepers[:2]))
    assert not ws.newly_ready()
    shm.heartbeats.beat(a.ident.index, WorkerState.RUNNING, 0)
    assert not ws.newly_ready()  # b still boots
    shm.heartbeats.beat(b.ident.index, WorkerState.RUNNING, 0)
    assert ws.newly_ready()
    assert ws.ready_generation == 1
    assert not ws.newly_ready()  # reported once


def test_retiring_workers_get_sigusr2_once(
    shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ws = WorkerSet(shm.heartbeats, 8)
    ws.generation = 1
    old = enlist(ws, shm, sleepers[0], 0, 1)
    ws.retire_all()
    ws.generation = 2
    new = enlist(ws, shm, sleepers[1], 0, 2)
    ws.tell_retiring(math.inf)
    assert sleepers[0].wait(5) == -signal.SIGUSR2  # sleep's default action: terminate
    assert old.retire_by == math.inf and new.retire_by is None
    assert sleepers[1].poll() is None
    assert [i.state for i in ws.infos()] == ["draining", "booting"]


def test_missed_heartbeats_abort_then_kill(
    shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ws = WorkerSet(shm.heartbeats, 8)
    stuck = enlist(ws, shm, sleepers[0], 0, 1)
    alive = enlist(ws, shm, sleepers[1], 1, 1)
    time.sleep(0.05)
    shm.heartbeats.beat(alive.ident.index, WorkerState.RUNNING, 0)
    ws.check_heartbeats(0.04, 1.0)
    assert sleepers[0].wait(5) == -signal.SIGABRT
    assert stuck.misses == 1 and alive.misses == 0
    assert sleepers[1].poll() is None


def test_a_worker_that_survives_sigabrt_is_killed_on_the_next_miss(shm: ShmSet) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGABRT, signal.SIG_IGN);"
        "print(1, flush=True); time.sleep(30)"
    )
    deaf = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert deaf.stdout is not None and deaf.stdout.readline() == b"1\n"
        ws = WorkerSet(shm.heartbeats, 8)
        proc = enlist(ws, shm, deaf, 0, 1)
        time.sleep(0.05)
        ws.check_heartbeats(0.04, 1.0)
        time.sleep(0.2)
        assert deaf.poll() is None  # SIGABRT ignored
        ws.check_heartbeats(0.04, 1.0)
        assert deaf.wait(5) == -signal.SIGKILL
        assert proc.misses == 2
    finally:
        deaf.kill()
        deaf.wait()
        deaf.stdout.close()


def test_retire_timeout_stops_then_kills(
    shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ws = WorkerSet(shm.heartbeats, 8)
    proc = enlist(ws, shm, sleepers[0], 0, 1)
    proc.retire_by = time.monotonic() - 1
    ws.check_heartbeats(60.0, 5.0)
    assert sleepers[0].wait(5) == -signal.SIGTERM
    assert proc.retire_stopped
    assert proc.retire_by is not None and proc.retire_by > time.monotonic() + 5.0


def test_free_index_and_the_limit(shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]) -> None:
    ws = WorkerSet(shm.heartbeats, 2)
    first = enlist(ws, shm, sleepers[0], 0, 1)
    enlist(ws, shm, sleepers[1], 1, 1)
    with pytest.raises(HaltSupervisor, match="no free process slot"):
        ws.free_index()
    del ws.procs[first.pid]
    assert ws.free_index() == first.ident.index


def test_infos_show_generation_then_slot(
    shm: ShmSet, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    ws = WorkerSet(shm.heartbeats, 8)
    b = enlist(ws, shm, sleepers[0], 1, 2)
    a = enlist(ws, shm, sleepers[1], 0, 2)
    old = enlist(ws, shm, sleepers[2], 1, 1)
    shm.heartbeats.beat(a.ident.index, WorkerState.RUNNING, 0)
    shm.heartbeats.beat(old.ident.index, WorkerState.DRAINING, 0)
    assert ws.infos() == [
        WorkerInfo(old.pid, 1, 1, old.ident.index, "draining"),
        WorkerInfo(a.pid, 0, 2, a.ident.index, "running"),
        WorkerInfo(b.pid, 1, 2, b.ident.index, "booting"),
    ]
