"""Reaper: after a worker's death, its sessions purged, its connection-id mark kept, its slot
respawned (with a backoff when it keeps dying young), and a boot failure halting all."""

from __future__ import annotations

import os
import time

import pytest

from msrpd.errors import HaltSupervisor
from msrpd.shm import CmapEntry, ShmSet
from msrpd.supervisor.reaper import EXIT_BOOT_ERROR, Reaper
from msrpd.supervisor.workerset import WorkerProc
from msrpd.workers.conids import FIRST_SERIAL
from msrpd.workers.context import WorkerIdentity
from msrpd.workers.handoff import make_conid
from msrpd.workers.worker import WORKER_BOOT_ERROR


def exited(code: int) -> int:
    """A wait status as os.waitpid() returns it for exit(code)."""
    return code << 8


def died_of(signum: int) -> int:
    return signum


def proc(slot: int, generation: int, index: int, *, age: float = 60.0) -> WorkerProc:
    return WorkerProc(1000 + index, WorkerIdentity(slot, generation, index), time.monotonic() - age)


def save(shm: ShmSet, sessid: str, slot: int, generation: int, serial: int) -> None:
    conid = make_conid(slot, generation, serial)
    entry = CmapEntry(sessid, conid, "msrp://h:1/s;tcp", "msrp://h:1", "tcp:x", time.time() + 60)
    assert shm.cmap.save(entry)


def test_a_death_purges_that_workers_sessions_only(shm: ShmSet) -> None:
    save(shm, "dead-1", 0, 1, 5)
    save(shm, "dead-2", 0, 1, 6)
    save(shm, "alive", 1, 1, 5)
    save(shm, "same-slot-older-generation", 0, 2, 5)
    reaper = Reaper(shm)
    reaper.reaped(proc(0, 1, 0), died_of(9), stopping=False, generation=1)
    now = time.time()
    assert shm.cmap.lookup("dead-1", now) is None
    assert shm.cmap.lookup("dead-2", now) is None
    assert shm.cmap.lookup("alive", now) is not None
    assert shm.cmap.lookup("same-slot-older-generation", now) is not None


def test_a_clean_exit_at_stop_leaves_the_tables_alone(shm: ShmSet) -> None:
    save(shm, "finished", 0, 1, 5)
    Reaper(shm).reaped(proc(0, 1, 0), exited(0), stopping=True, generation=1)
    assert shm.cmap.lookup("finished", time.time()) is not None


def test_the_successor_starts_above_the_dead_workers_serials(shm: ShmSet) -> None:
    reaper = Reaper(shm)
    assert reaper.first_serial(0, 1) == FIRST_SERIAL
    shm.heartbeats.claim(3, 1003, 0, 1)
    shm.heartbeats.reserve_serials(3, FIRST_SERIAL + 5000)  # the worker's own reservation
    reaper.reaped(proc(0, 1, 3), died_of(9), stopping=False, generation=1)
    assert reaper.first_serial(0, 1) == FIRST_SERIAL + 5000
    assert shm.heartbeats.serial_mark(3) == 0  # the record is free again
    assert reaper.first_serial(1, 1) == FIRST_SERIAL
    reaper.new_generation(2)  # marks of older generations are not needed any more
    assert reaper.first_serial(0, 1) == FIRST_SERIAL


def test_a_young_death_backs_off_and_doubles(shm: ShmSet) -> None:
    reaper = Reaper(shm)
    reaper.reaped(proc(2, 1, 0, age=0.1), died_of(9), stopping=False, generation=1)
    assert reaper.due() == []  # 0.25 s first
    time.sleep(0.3)
    assert reaper.due() == [2]
    assert reaper.due() == []  # once
    reaper.reaped(proc(2, 1, 0, age=0.1), died_of(9), stopping=False, generation=1)
    assert reaper.backoff[2] == 0.5
    reaper.reaped(proc(1, 1, 1, age=60.0), died_of(9), stopping=False, generation=1)
    assert reaper.due() == [1]  # an old worker's death: respawned at once


def test_a_retiring_or_old_generation_worker_is_not_respawned(shm: ShmSet) -> None:
    reaper = Reaper(shm)
    retiring = proc(0, 2, 0)
    retiring.retiring = True
    reaper.reaped(retiring, exited(0), stopping=False, generation=2)
    reaper.reaped(proc(1, 1, 1), died_of(9), stopping=False, generation=2)
    reaper.reaped(proc(2, 2, 2), died_of(9), stopping=True, generation=2)
    assert reaper.due() == []
    assert reaper.respawn_at == {}


def test_a_boot_failure_halts_the_supervisor(shm: ShmSet) -> None:
    save(shm, "s", 0, 1, 5)
    with pytest.raises(HaltSupervisor) as halt:
        Reaper(shm).reaped(proc(0, 1, 0), exited(WORKER_BOOT_ERROR), stopping=False, generation=1)
    assert halt.value.exit_status == EXIT_BOOT_ERROR
    assert "worker 0 failed to boot" in halt.value.reason
    assert shm.cmap.lookup("s", time.time()) is None


def test_exit_status_is_decoded_from_a_real_wait_status(shm: ShmSet) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(WORKER_BOOT_ERROR)
    _, status = os.waitpid(pid, 0)
    with pytest.raises(HaltSupervisor):
        Reaper(shm).reaped(proc(0, 1, 0), status, stopping=False, generation=1)
