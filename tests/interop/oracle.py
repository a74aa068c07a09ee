"""Kamailio 5.6.3 as a live oracle, run through ../shared/oracle/run-kamailio.sh.

Strategy: one Kamailio per test module, on a free loopback port, with its own KAM_RUN_DIR in
a temporary directory, so the script's pid file (the only thing it ever signals) is ours.
Before each scenario `ready()` makes sure the instance is whole (main process and every
worker alive: one scenario, first_line_no_method, crashes a worker and Kamailio then stops
itself) and that the unknown session ids the scenario uses are not hit by Kamailio's cmap
lookup false positive (reference §0.3: a hash-slot neighbour from an earlier scenario's AUTH
makes an unknown session look known). Either problem means a restart, which gives an empty
cmap, as each golden recording had. Nothing is killed by name; only the pids the script
recorded for this instance are ever signalled.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.integration.relay import free_port

__all__ = ["ORACLE_DIR", "Kamailio", "missing"]

ORACLE_DIR = Path(__file__).resolve().parents[3] / "shared" / "oracle"
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def missing() -> str | None:
    """Why the live Kamailio cannot run here, or None when it can."""
    script = ORACLE_DIR / "run-kamailio.sh"
    if not script.is_file():
        return f"the Kamailio oracle is missing: no {script} (../shared/oracle)"
    if shutil.which("kamailio", path=_PATH) is None:
        return "the kamailio binary is missing (scripts/test installs Debian's package kamailio)"
    return None


class Kamailio:
    def __init__(self, cfg: str = "kamailio-cmap.cfg", children: int = 2) -> None:
        self.cfg = cfg
        self.children = children
        self.run_dir = Path(tempfile.mkdtemp(prefix="kam-interop-"))
        self.port = free_port()
        self.restarts: list[str] = []

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KAM_RUN_DIR": str(self.run_dir), "PATH": _PATH}
        return subprocess.run(
            ["bash", str(ORACLE_DIR / "run-kamailio.sh"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start(self) -> None:
        result = self._script("start", self.cfg, str(self.port), str(self.children))
        if result.returncode != 0:
            # The old port may still be held (TIME_WAIT after a crash): take another one.
            self.port = free_port()
            result = self._script("start", self.cfg, str(self.port), str(self.children))
        if result.returncode != 0:
            raise RuntimeError(f"kamailio did not start:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        self._script("stop", self.cfg, str(self.port))

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _pids(self) -> list[int]:
        try:
            main = int((self.run_dir / f"kamailio-{self.port}.pid").read_text())
            kids = (self.run_dir / f"kamailio-{self.port}.children").read_text().split()
        except (OSError, ValueError):
            return []
        return [main, *map(int, kids)]

    def alive(self) -> bool:
        """The main process and every worker recorded at start are running."""
        pids = self._pids()
        if not pids:
            return False
        for pid in pids:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                return False
        return True

    def alive_after(self, expected: bool, timeout: float = 5.0) -> bool:
        """alive(), giving a Kamailio that is expected to die (a crashed worker makes the main
        process stop everything) the time to do so."""
        deadline = time.monotonic() + timeout
        while not expected and self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.alive()

    def restart(self, why: str) -> None:
        self.restarts.append(why)
        pids = self._pids()
        deadline = time.monotonic() + 5
        # A crashed worker makes the main process stop everything: let it finish first.
        while pids and not self.alive() and time.monotonic() < deadline:
            if not psutil.pid_exists(pids[0]):
                break
            time.sleep(0.05)
        self.stop()
        self.start()

    def _lookup(self, sessid: str) -> bytes:
        """Kamailio's first reply to a one-hop SEND for `sessid` (b"" when none)."""
        tid = "pf" + os.urandom(4).hex()
        frame = (
            f"MSRP {tid} SEND\r\nTo-Path: msrp://127.0.0.1:{self.port}/{sessid};tcp\r\n"
            f"From-Path: msrp://127.0.0.1:9/preflight;tcp\r\n-------{tid}$\r\n"
        )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(frame.encode())
                return sock.recv(4096)
        except OSError:
            return b""

    def ready(self, unknown_sessions: set[str]) -> None:
        """Restart when the instance is broken or would answer an unknown session 200."""
        if not self.alive():
            self.restart("not running (a worker crashed)")
        for sessid in sorted(unknown_sessions) or ["interop-health"]:
            reply = self._lookup(sessid)
            if b" 481 " in reply.split(b"\r\n", 1)[0]:
                continue
            why = "cmap false positive" if b" 200 " in reply else "no answer"
            self.restart(f"{why} for session {sessid!r}")
            return

    def log(self) -> str:
        try:
            return (self.run_dir / f"kamailio-{self.port}.log").read_text(errors="replace")
        except OSError:
            return ""
