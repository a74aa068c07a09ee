"""StripeLocks: exclusion across processes and threads, and release when the holder dies."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from msrpd.shm import StripeLocks
from msrpd.shm.locks import check_stripes

from ..forking import Children


def _byte_is_locked(path: Path, i: int) -> bool:
    """Probe from this process with a separate fd (only safe when we hold no lock on path)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, i, os.SEEK_SET)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, i, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def _hold_in_child(children: Children, path: Path, stripe: int) -> int:
    """Fork a child that takes `stripe` and sleeps holding it; return once it holds it."""
    r, w = os.pipe()

    def child() -> None:
        os.close(r)
        locks = StripeLocks.open(path, 8)
        locks.lock(stripe)
        os.write(w, b"x")
        time.sleep(60)

    pid = children.fork(child)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    return pid


def test_check_stripes() -> None:
    assert [check_stripes(1 << k) for k in range(17)] == list(range(17))
    for bad in (0, -1, 3, 6, 1 << 17, 100):
        with pytest.raises(ValueError, match="n_stripes"):
            check_stripes(bad)


def test_sigkilled_holder_releases_within_a_second(tmp_path: Path, children: Children) -> None:
    path = tmp_path / "locks"
    holder = _hold_in_child(children, path, 3)
    assert _byte_is_locked(path, 3)
    assert not _byte_is_locked(path, 2)  # other stripes are free

    r, w = os.pipe()

    def waiter() -> None:
        os.close(r)
        locks = StripeLocks.open(path, 8)
        with locks.held(3):
            os.write(w, b"got")

    waiting = children.fork(waiter)
    os.close(w)
    time.sleep(0.2)
    assert children.live == {holder, waiting}
    os.set_blocking(r, False)
    with pytest.raises(BlockingIOError):
        os.read(r, 3)  # the waiter is blocked on stripe 3
    os.set_blocking(r, True)

    killed_at = time.monotonic()
    assert children.kill(holder) == -9
    assert os.read(r, 3) == b"got"
    assert time.monotonic() - killed_at < 1.0
    assert children.wait(waiting) == 0
    os.close(r)
    assert not _byte_is_locked(path, 3)


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    locks = StripeLocks.open(tmp_path / "locks", 4)
    inside = 0
    overlap = False

    def worker() -> None:
        nonlocal inside, overlap
        for _ in range(2000):
            with locks.held(1):
                inside += 1
                if inside != 1:
                    overlap = True
                inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    locks.close()
    assert not overlap


def test_lock_unlock_and_close_release(tmp_path: Path, children: Children) -> None:
    path = tmp_path / "locks"
    r, w = os.pipe()

    def child() -> None:
        os.close(r)
        locks = StripeLocks.open(path, 2)
        locks.lock(0)
        locks.lock(1)
        locks.unlock(0)
        os.write(w, b"1")  # holds 1 only
        time.sleep(0.3)
        locks.close()  # closing the fd drops stripe 1 too
        assert locks.closed
        os.write(w, b"2")
        time.sleep(60)

    pid = children.fork(child)
    os.close(w)
    assert os.read(r, 1) == b"1"
    assert not _byte_is_locked(path, 0)
    assert _byte_is_locked(path, 1)
    assert os.read(r, 1) == b"2"
    assert not _byte_is_locked(path, 1)
    os.close(r)
    children.kill(pid)
