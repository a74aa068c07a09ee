"""Forked children of one test, tracked until reaped.

Teardown SIGKILLs only children not yet reaped (an unreaped child's pid cannot have been
reused), never anything found by name. The `children` fixture lives in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable


class Children:
    """Forked children of one test."""

    def __init__(self) -> None:
        self.live: set[int] = set()

    def fork(self, fn: Callable[[], None]) -> int:
        """Run fn in a child that exits 0 when it returns and 1 on any exception."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                fn()
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        self.live.add(pid)
        return pid

    def wait(self, pid: int, timeout: float = 30.0) -> int:
        """Reap a child: its exit code, or -signal. SIGKILLs it after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.live.discard(pid)
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                self.kill(pid)
                raise TimeoutError(f"child {pid} still running after {timeout} s")
            time.sleep(0.002)

    def kill(self, pid: int) -> int:
        """SIGKILL a child of ours that is not reaped yet, and reap it."""
        assert pid in self.live, "only kill our own unreaped children"
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self.live.discard(pid)
        return os.waitstatus_to_exitcode(status)


def never_goes_back(children: Children, fn: Callable[[], None], read: Callable[[], int]) -> int:
    """Run fn in a child and read() over and over until it exits (0): every reading is at
    least the one before (a counter another process moves on). The last reading."""
    last, reads = read(), 0
    child = children.fork(fn)
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0):
        for _ in range(10_000):
            value = read()
            assert value >= last, (value, last)
            last = value
        reads += 10_000
    children.live.discard(child)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert reads > 10_000, reads  # this process read while the child ran
    return last
