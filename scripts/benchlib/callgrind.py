"""Instructions per frame: msrpd under valgrind's callgrind, counted only while measuring.

`scripts/bench flood --callgrind DIR` starts msrpd under `valgrind --tool=callgrind
--instr-atstart=no` (valgrind follows the daemon's and the workers' forks: one file per
process in DIR) with cgtoggle.c preloaded, tells every worker when the measured window
opens and when it closes (a file each: on.PID starts the count, off.PID dumps it), and reads
the dumped totals. Instructions are the figure that does not wobble on a shared machine
(seconds do); the relay runs about 50x slower under valgrind, so the load is set by the
relay, and reads carry many frames each. Kernel work (system calls) is not counted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["dump", "start", "wrapper"]

_HERE = Path(__file__).resolve().parent
_TOTAL = re.compile(rb"^totals:\s*(\d+)", re.M)


def wrapper(out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(command prefix, environment) that run msrpd under callgrind, its files in `out_dir`."""
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        raise RuntimeError("--callgrind needs valgrind and gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "cgtoggle.so"
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-pthread", "-o", str(lib), str(_HERE / "cgtoggle.c")],
        check=True,
        timeout=120,
    )
    # valgrind's own messages go to a file: on the inherited stderr they would keep the
    # start command's pipe open after msrpd has daemonized.
    prefix = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.%p",
        f"--log-file={out_dir}/valgrind.%p.log",
    ]
    return prefix, {"LD_PRELOAD": str(lib), "CGTOGGLE_DIR": str(out_dir)}


def start(pids: list[int], out_dir: Path) -> None:
    """The measured window opens: count instructions in `pids` from now."""
    for pid in pids:
        (out_dir / f"on.{pid}").touch()


def dump(pids: list[int], out_dir: Path) -> int:
    """The window closes: the instructions `pids` executed since `start`."""
    for pid in pids:
        (out_dir / f"off.{pid}").touch()
    total = 0
    for pid in pids:
        total += _wait_dump(out_dir, pid)
    return total


def _wait_dump(out_dir: Path, pid: int, timeout: float = 120.0) -> int:
    """The total of `pid`'s dump of the window (callgrind.PID.1: its first dump)."""
    path = out_dir / f"callgrind.{pid}.1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            m = _TOTAL.search(path.read_bytes())
            if m is not None:
                return int(m[1])
        time.sleep(0.2)
    raise RuntimeError(f"callgrind: no dump from worker {pid} in {timeout:.0f} s")
