"""Instructions per frame: msrpd under valgrind's callgrind, counted only while measuring.

`scripts/bench flood --callgrind DIR` starts msrpd under `valgrind --tool=callgrind
--instr-atstart=no` (valgrind follows the daemon's and the workers' forks: one file per
process in DIR) with cgtoggle.c preloaded, tells every worker when the measured window
opens and when it closes (a file each: on.PID.N starts the count of window N, off.PID.N
dumps it), and reads the dumped totals. Instructions are the figure that does not wobble on
a shared machine (seconds do); the relay runs about 50x slower under valgrind, so the load
is set by the relay, and reads carry many frames each. Kernel work (system calls) is not counted.

scripts/instructions runs Kamailio the same way (`kamailio_env`: run-kamailio.sh finds a
`kamailio` first in PATH that execs valgrind on the real one) and opens the window only when
every process of the relay counts (`wait_started`), for a window bounded by frame counts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

__all__ = ["dump", "kamailio_env", "start", "timer_work", "wait_started", "wrapper"]

_HERE = Path(__file__).resolve().parent
_TOTAL = re.compile(rb"^totals:\s*(\d+)", re.M)
# libuv's two entries to callbacks that are not I/O: due timers (`call_later`, `sleep`) and
# idle handles (uvloop runs `call_soon` callbacks, and so woken tasks, from one). The name
# must be followed by " [" at once: a recursion's copy (`uv__run_idle'2 [`) does not match,
# and the outer entry already holds its cost.
_TIMER_ENTRIES = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*:(uv__run_timers|uv__run_idle) \[", re.M)


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


def kamailio_env(out_dir: Path) -> dict[str, str]:
    """What run-kamailio.sh needs in its environment to start Kamailio under callgrind: a
    `kamailio` shim first in PATH (the script runs `kamailio` from PATH) that execs valgrind
    on the real one, with the preload set there only (not in the script's sed, ss and ps)."""
    real = shutil.which("kamailio") or "/usr/sbin/kamailio"
    prefix, env = wrapper(out_dir)
    bin_dir = out_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "kamailio"
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    shim.write_text(
        f'#!/bin/sh\nexec env {assigns} {shlex.join(prefix)} {shlex.quote(real)} "$@"\n'
    )
    shim.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def start(pids: list[int], out_dir: Path, window: int = 1) -> None:
    """Window number `window` (1, 2, ... in turn) opens: count instructions in `pids` from now."""
    for pid in pids:
        (out_dir / f"on.{pid}.{window}").touch()


def wait_started(pids: list[int], out_dir: Path, window: int = 1, timeout: float = 60.0) -> None:
    """Until every one of `pids` counts (after `start`): cgtoggle.c creates started.PID.N."""
    deadline = time.monotonic() + timeout
    while missing := [p for p in pids if not (out_dir / f"started.{p}.{window}").exists()]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind: {missing} did not start counting in {timeout:.0f} s")
        time.sleep(0.02)


def dump(pids: list[int], out_dir: Path, window: int = 1) -> int:
    """Window `window` closes: the instructions `pids` executed since its `start`."""
    for pid in pids:
        (out_dir / f"off.{pid}.{window}").touch()
    total = 0
    for pid in pids:
        total += _wait_dump(out_dir, pid, window)
    return total


def timer_work(pids: list[int], out_dir: Path, window: int = 1) -> dict[int, int]:
    """Per process of `pids`, the instructions window `window` spent in libuv's timers and
    idle handles: the relay's per-second work (housekeeping, heartbeats), not its frames'.

    Read from the window's own dump (callgrind_annotate's inclusive costs), so it is what ran
    in the counted window itself. A second, idle window counted as long is no measure of it:
    the timers fire by wall-clock time, and how many fell in each window differed (4-5 M
    instructions in the frames' window against 17-21 M in the idle one, three runs of
    `--rate 2000`, 2026-12-04: taking the idle one off took 7,000 instructions a frame too
    many). Zero for a process that runs no libuv loop (Kamailio's)."""
    work: dict[int, int] = {}
    for pid in pids:
        path = out_dir / f"callgrind.{pid}.{window}"
        report = subprocess.run(
            # --show=Ir: one column whatever events were recorded (VALGRIND_OPTS may add
            # cache and branch simulation), the one _TIMER_ENTRIES reads.
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--show=Ir", str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
        work[pid] = sum(int(m[1].replace(",", "")) for m in _TIMER_ENTRIES.finditer(report))
    return work


def _wait_dump(out_dir: Path, pid: int, window: int, timeout: float = 120.0) -> int:
    """The total of `pid`'s dump of window `window` (callgrind.PID.N: its Nth dump)."""
    path = out_dir / f"callgrind.{pid}.{window}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            m = _TOTAL.search(path.read_bytes())
            if m is not None:
                return int(m[1])
        time.sleep(0.2)
    raise RuntimeError(f"callgrind: no dump from worker {pid} in {timeout:.0f} s")
