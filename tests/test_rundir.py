"""msrpd/rundir.py: every run-dir file name, the run_dir lock, and the clean-up of what a crashed
run left (the clean-up globs come from the same names the relay creates its files with)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from msrpd.config import load_config
from msrpd.errors import HaltSupervisor
from msrpd.rundir import (
    EXIT_ALREADY_RUNNING,
    RunDir,
    accept_path,
    cmap_lockfile,
    ctl_path,
    fifo_path,
    handoff_path,
    lockfile,
    log_path,
    move_lockfile,
    pidfile,
    read_pid,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "msrpd.toml"
    path.write_text(text)
    return path


def test_derived_paths(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, '[core]\nrun_dir = "run"\n'))
    run = tmp_path / "run"
    assert settings.core.run_dir == run
    assert pidfile(settings) == run / "msrpd.pid"
    assert lockfile(settings) == run / "msrpd.lock"
    assert cmap_lockfile(settings) == run / "cmap.lock"
    assert fifo_path(settings) == run / "msrpd.fifo"
    assert log_path(settings) == run / "msrpd.log"
    custom = load_config(
        write(tmp_path, '[control]\nfifo = "/var/run/x.fifo"\n[log]\nfile = "/var/log/m.log"\n')
    )
    assert fifo_path(custom) == Path("/var/run/x.fifo")
    assert log_path(custom) == Path("/var/log/m.log")


def test_worker_socket_names() -> None:
    run = Path("/run/m")
    assert handoff_path(run, 3, 7) == run / "handoff-3-7.sock"
    assert accept_path(run, 3, 7) == run / "accept-3-7.sock"
    assert ctl_path(run, 3, 7) == run / "ctl-3-7.sock"
    assert move_lockfile(run) == run / "move.lock"


def test_acquire_cleans_what_a_crashed_run_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = load_config(write(tmp_path, f'[core]\nrun_dir = "{run}"\n'))
    run.mkdir()
    left = [
        pidfile(settings),
        fifo_path(settings),
        handoff_path(run, 0, 1),
        accept_path(run, 1, 2),
        ctl_path(run, 2, 3),
    ]
    for path in left[:2]:
        path.write_text("12345\n")
    for path in left[2:]:  # real Unix sockets, as the workers bind them
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
    kept = [run / "notes.txt", move_lockfile(run), cmap_lockfile(settings)]
    for path in kept:
        path.write_text("x")
    rundir = RunDir(settings)
    try:
        cleaned = rundir.acquire()
        assert sorted(cleaned) == sorted(str(p) for p in left)
        assert not any(p.exists() for p in left)
        assert all(p.exists() for p in kept)
        rundir.write_pid(os.getpid())
        assert read_pid(settings) == os.getpid()
    finally:
        rundir.release()
    assert not pidfile(settings).exists()
    assert lockfile(settings).exists()  # only a name to lock on


def test_a_second_acquire_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, '[core]\nrun_dir = "run"\n'))
    first = RunDir(settings)
    first.acquire()
    try:
        first.write_pid(4242)
        with pytest.raises(HaltSupervisor) as refused:
            RunDir(settings).acquire()
        assert refused.value.exit_status == EXIT_ALREADY_RUNNING
        assert "pid 4242" in refused.value.reason
    finally:
        first.release()
    second = RunDir(settings)
    second.acquire()  # the lock went with the first
    second.release()
