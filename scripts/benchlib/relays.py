"""The relays under test: msrpd through its CLI, Kamailio through the oracle's run-kamailio.sh.

Each relay gets its own temporary run directory and a free port on 127.0.0.1, and is stopped
the way it was started (msrpd stop -c FILE, run-kamailio.sh stop with the same KAM_RUN_DIR):
nothing here signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT.parent / "shared" / "oracle"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Usage:
    cpu: float
    """user + system seconds, summed over the relay's processes."""
    rss: int
    pss: int
    procs: int


class Relay:
    name = "relay"

    def __init__(self, children: int) -> None:
        self.children = children
        self.port = free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name[:3]}-"))

    @property
    def relay_uri(self) -> bytes:
        return b"msrp://127.0.0.1:%d;tcp" % self.port

    def main_pid(self) -> int | None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def processes(self) -> list[psutil.Process]:
        pid = self.main_pid()
        if pid is None:
            return []
        try:
            main = psutil.Process(pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def usage(self, memory: bool = False) -> Usage:
        """CPU seconds so far; with `memory`, RSS and PSS (smaps: slower) of every process."""
        cpu = 0.0
        rss = pss = n = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cpu += times.user + times.system
                n += 1
                if memory:
                    info = proc.memory_full_info()
                    rss += info.rss
                    pss += info.pss
        return Usage(cpu, rss, pss, n)

    def worker_pids(self) -> list[int]:
        pid = self.main_pid()
        if pid is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(pid).children()]
        return []

    def log_tail(self) -> str:
        return ""

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


class Msrpd(Relay):
    name = "msrpd"

    def __init__(self, children: int, extra: list[str] | None = None) -> None:
        super().__init__(children)
        self.ws_port = free_port()
        self.config = self.run_dir / "msrpd.toml"
        sections: dict[str, dict[str, str]] = {
            "core": {
                "children": str(children),
                # ws: for --alice-ws; a listener nobody uses costs nothing
                "listen": f'["tcp:127.0.0.1:{self.port}", "ws:127.0.0.1:{self.ws_port}"]',
                "run_dir": f'"{self.run_dir}"',
                "log_level": '"warning"',
                "drain_timeout": "5.0",
            },
            "log": {"accounting": "false"},
            # Every client comes from 127.0.0.1, by the thousand: the counts are off. The
            # session rates stay on, out of reach, so their per-frame cost is measured.
            "limits": {
                "max_conns_per_addr": "0",
                "max_unauth_conns": "0",
                "max_sessions_per_user": "0",
                "session_frame_rate": "1e9",
                "session_byte_rate": "1e12",
            },
            # Kamailio's example route, as the oracle runs (the default relay route takes AUTH
            # over TLS only); an `msrp.route=...` option picks another.
            "msrp": {"route": f'"{ROOT / "msrpd" / "routing" / "routes" / "cmap.py"}"'},
        }
        for item in extra or ():
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
        self.config.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                for section, keys in sections.items()
            )
        )

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "msrpd", *args, "-c", str(self.config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )

    def main_pid(self) -> int | None:
        try:
            return int((self.run_dir / "msrpd.pid").read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        result = self._cli("start")
        if result.returncode != 0:
            raise RuntimeError(f"msrpd start failed ({result.returncode}): {result.stderr}")

    def stop(self) -> None:
        if self.main_pid() is not None:
            result = self._cli("stop", "--timeout", "20")
            if result.returncode != 0:
                print(f"msrpd stop: {result.returncode} {result.stderr.strip()}", file=sys.stderr)
        self.cleanup()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.run_dir / "msrpd.log").read_text().splitlines()[-20:])
        return ""


class Kamailio(Relay):
    name = "kamailio"
    cfg = "kamailio-cmap.cfg"

    def __init__(self, children: int, oracle: Path = ORACLE) -> None:
        super().__init__(children)
        self.script = oracle / "run-kamailio.sh"
        self.env = {**os.environ, "KAM_RUN_DIR": str(self.run_dir), "KAM_DEBUG": "1"}

    def _script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.script), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def main_pid(self) -> int | None:
        try:
            return int((self.run_dir / f"kamailio-{self.port}.pid").read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        result = self._script("start", self.cfg, str(self.port), str(self.children))
        if result.returncode != 0:
            raise RuntimeError(f"kamailio start failed: {result.stdout}{result.stderr}")

    def stop(self) -> None:
        if self.main_pid() is not None:
            self._script("stop", self.cfg, str(self.port))
        self.cleanup()

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            log = self.run_dir / f"kamailio-{self.port}.log"
            return "\n".join(log.read_text().splitlines()[-20:])
        return ""


def make_relay(
    name: str, children: int, oracle: Path = ORACLE, msrpd_options: list[str] | None = None
) -> Relay:
    """`msrpd_options`: "section.key=TOML value" lines added to msrpd's config."""
    if name == "msrpd":
        return Msrpd(children, msrpd_options)
    if name == "kamailio":
        return Kamailio(children, oracle)
    raise ValueError(name)


def wait_settled(relay: Relay, seconds: float = 0.5) -> None:
    """Let a freshly started relay finish its start-up work before a baseline is taken."""
    time.sleep(seconds)
    relay.usage()


class MachineCpu:
    """Whole-machine CPU from /proc/stat: busy and softirq, in cores, between two reads."""

    def __init__(self) -> None:
        self.t = time.monotonic()
        self.busy, self.softirq = self._read()

    @staticmethod
    def _read() -> tuple[float, float]:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(x) for x in fields]
        hz = os.sysconf("SC_CLK_TCK")
        idle = ticks[3] + ticks[4]
        busy = sum(ticks[:8]) - idle
        return busy / hz, ticks[6] / hz

    def since(self, earlier: MachineCpu) -> tuple[float, float]:
        dt = max(1e-9, self.t - earlier.t)
        return (self.busy - earlier.busy) / dt, (self.softirq - earlier.softirq) / dt


def other_load(seconds: float = 0.5, exclude: frozenset[int] = frozenset()) -> tuple[float, str]:
    """Cores the machine spends on anything while we are idle, and the top processes."""
    me = os.getpid()
    before: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is not None:
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"]])
            before[proc.pid] = (cmd[:60], times.user + times.system)
    start = MachineCpu()
    time.sleep(seconds)
    busy, _ = MachineCpu().since(start)
    used: list[tuple[float, str]] = []
    for proc in psutil.process_iter(["cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.pid in before and proc.pid != me and proc.pid not in exclude and times:
            name, cpu = before[proc.pid]
            used.append(((times.user + times.system - cpu) / seconds, f"[{proc.pid}] {name}"))
    used.sort(reverse=True)
    top = "; ".join(f"{name} {cores:.2f}" for cores, name in used[:3] if cores >= 0.05)
    return busy, top
