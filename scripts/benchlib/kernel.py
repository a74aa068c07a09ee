"""What the kernel counts for the relay's workers: read and write system calls, page faults,
CPU split into user and system time (/proc/PID/io and /proc/PID/stat).

Counts, unlike seconds, do not wobble on a shared machine: `big` reports them per MiB, beside
callgrind's instructions (which count no kernel work). syscr and syscw count every call that
reads or writes a file descriptor (read, recv, write, send, sendmsg...), not epoll_wait.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Counts", "counts", "strace", "strace_totals"]

_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", re.M)

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Counts:
    reads: int = 0
    writes: int = 0
    faults: int = 0
    user: float = 0.0
    system: float = 0.0

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.reads - other.reads,
            self.writes - other.writes,
            self.faults - other.faults,
            self.user - other.user,
            self.system - other.system,
        )

    def per(self, mib: float) -> dict[str, float]:
        """Each count per MiB relayed (CPU in milliseconds)."""
        mib = max(mib, 1e-9)
        return {
            "reads": self.reads / mib,
            "writes": self.writes / mib,
            "faults": self.faults / mib,
            "user_ms": self.user * 1e3 / mib,
            "system_ms": self.system * 1e3 / mib,
        }


def counts(pids: list[int]) -> Counts:
    """The sums over `pids` so far (a process that is gone counts nothing)."""
    reads = writes = faults = 0
    user = system = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
            with open(f"/proc/{pid}/stat") as f:
                # Fields after the command (which may hold spaces) start at its ")".
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        reads += int(io["syscr"])
        writes += int(io["syscw"])
        faults += int(stat[7]) + int(stat[9])  # minflt, majflt (fields 10 and 12)
        user += int(stat[11]) / _TICK  # utime, stime (fields 14 and 15)
        system += int(stat[12]) / _TICK
    return Counts(reads, writes, faults, user, system)


def strace(pids: list[int], out_dir: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """`strace -c` attached to each of `pids` (system calls by kind, in out_dir/strace.PID).
    strace slows every call down: its MB/s are not the relay's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tracers = []
    for pid in pids:
        path = out_dir / f"strace.{pid}"
        cmd = ["strace", "-c", "-f", "-qq", "-o", str(path), "-p", str(pid)]
        tracers.append((subprocess.Popen(cmd, stderr=subprocess.DEVNULL), path))
    time.sleep(0.5)  # attached before the load starts
    return tracers


def strace_totals(tracers: list[tuple[subprocess.Popen[bytes], Path]]) -> dict[str, int]:
    """Detach the tracers; the calls they counted, by name, summed over the processes."""
    totals: dict[str, int] = {}
    for proc, _ in tracers:
        proc.send_signal(signal.SIGINT)
    for proc, path in tracers:
        proc.wait(30)
        for calls, name in _ROW.findall(path.read_text()):
            if name != "total":
                totals[name] = totals.get(name, 0) + int(calls)
    return totals
