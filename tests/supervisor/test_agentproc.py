"""AgentProc (supervisor/agentproc.py) with real forks: an agent that dies young is respawned
after a backoff; a reload that takes the cluster away meanwhile ends the respawns."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.config import load_config
from msrpd.config.secret import SecretUrl
from msrpd.rundir import PROCESS_SLOTS
from msrpd.shm import ShmLayout, Stats, instance_prefix
from msrpd.supervisor.agentproc import AgentProc


@pytest.fixture
def stats(run_dir: Path) -> Iterator[Stats]:
    made = Stats.create(instance_prefix(run_dir), PROCESS_SLOTS)
    try:
        yield made
    finally:
        made.close()
        made.unlink()


def _die_at_once() -> None:
    os._exit(3)  # the child's first step: it dies young, before it runs an agent


def test_a_reload_without_redis_during_a_backoff_stops_the_respawns(
    run_dir: Path, stats: Stats
) -> None:
    base = load_config(None)
    url = SecretUrl("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0")
    with_redis = dataclasses.replace(base, cluster=dataclasses.replace(base.cluster, redis=url))
    layout = ShmLayout(instance_prefix(run_dir), run_dir / "lock", 4, 64, 64, PROCESS_SLOTS)
    proc = AgentProc(layout, stats, _die_at_once, with_redis)
    proc.start()
    pid = proc.pid
    assert pid is not None
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert proc.reaped(pid, status, stopping=False)
    assert proc.respawn_at is not None and proc.respawn_at > time.monotonic()  # the backoff
    proc.restart(base)  # [cluster] redis gone
    time.sleep(proc.backoff + 0.05)
    proc.maintain()
    assert (proc.pid, proc.respawn_at) == (None, None)
    proc.maintain()
    assert proc.pid is None
