"""System calls per frame: `strace -c -f` attached to every process of a relay for a window.

scripts/instructions --strace runs the relay natively (no valgrind) and counts, with strace's
summary (-c), the system calls all its processes (and their threads: -f) make between
`attach` and `detach`; the window is bounded by frame counts, as callgrind's is. strace
slows every system call down (ptrace stops the process twice per call), so how long a window
lasts says nothing; how many calls it holds is the figure.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

__all__ = ["Tracer"]


class Tracer:
    """One strace over `pids`, its summary in `out`."""

    def __init__(self, pids: list[int], out: Path) -> None:
        exe = shutil.which("strace")
        if exe is None:
            raise RuntimeError("--strace needs strace (apt-get install -y strace)")
        self.pids = pids
        self.out = out
        cmd = [exe, "-c", "-f", "-q", "-o", str(out)]
        for pid in pids:
            cmd += ["-p", str(pid)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_attached(self, timeout: float = 30.0) -> None:
        """Until every thread of every pid is traced (TracerPid in its status)."""
        deadline = time.monotonic() + timeout
        while not all(self._traced(pid) for pid in self.pids):
            if self.proc.poll() is not None:
                raise RuntimeError(f"strace exited: {self.proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError(f"strace: not attached to {self.pids} in {timeout:.0f} s")
            time.sleep(0.02)

    @staticmethod
    def _traced(pid: int) -> bool:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            for line in status.read_text().splitlines():
                if line.startswith("TracerPid:") and line.split()[1] == "0":
                    return False
        return True

    def detach(self) -> Counter[str]:
        """Stop tracing (strace writes its summary on SIGINT): calls per system call."""
        self.proc.send_signal(signal.SIGINT)  # our own child, by its pid
        self.proc.wait(60)
        calls: Counter[str] = Counter()
        for line in self.out.read_text().splitlines():
            fields = line.split()
            # "% time seconds usecs/call calls [errors] syscall"; the rules and header skip
            if len(fields) < 5 or not fields[3].isdigit() or fields[-1] == "total":
                continue
            calls[fields[-1]] += int(fields[3])
        return calls
