"""Running a real msrpd for integration tests: config file, CLI start/stop, process facts.

Each Relay gets its own run_dir under /tmp (short: Unix socket paths are capped at 108 bytes)
and free ports, starts through the real CLI (daemon mode, so `start` returning 0 means every
worker accepts), and is stopped by the CLI at teardown; as a last resort only the pids it
started are killed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from msrpd.config import load_config
from msrpd.hotpath import environment
from msrpd.routing import DEFAULT_ROUTE
from msrpd.rundir import layout_for
from msrpd.shm import instance_prefix
from msrpd.users.sqlite import SqliteUsers

REALM = "testrealm"
CMAP_ROUTE = DEFAULT_ROUTE.with_name("cmap.py")
"""The route these tests were written for (the default before issue 14): a Relay runs it
unless `msrp` names a route; `route=None` there runs the default relay route."""
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
LIMITS_OFF: dict[str, object] = {
    "max_conns_per_addr": 0,
    "max_unauth_conns": 0,
    "auth_failures_close": 0,
    "ban_after": 0,
    "max_sessions_per_user": 0,
    "max_outbound_per_second": 0,
    "session_frame_rate": 0,
    "session_byte_rate": 0,
}
"""[limits] for a relay whose test does not test them: every client comes from 127.0.0.1
and load tests send fast. Probation stays on (a test client that waits for more than its
30 s authenticates first)."""


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[Relay]:
    """A started Relay, stopped and cleaned at the end: for a module-scoped fixture, one relay
    for the tests that only open connections of their own and close them."""
    relay = Relay(**kwargs)  # type: ignore[arg-type]
    try:
        result = relay.start()
        assert result.returncode == 0, result.stderr + relay.log()
        yield relay
    finally:
        relay.stop()


def title(proc: psutil.Process) -> str:
    """The process title setproctitle gave (padded with blanks in /proc/pid/cmdline)."""
    return " ".join(proc.cmdline()).strip()


def exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie (exited; its parent has not reaped it yet: a daemon's supervisor
    belongs to whatever adopted it, here a pid 1 that reaps every few seconds)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _port_block() -> range:
    """This test process's own ports, below the kernel's ephemeral range.

    A port found free here is bound by the relay only later; a port from bind(0) lies in the
    ephemeral range, where any connect() of another test process (pytest-xdist runs several)
    may take it meanwhile. Each xdist worker (gw0, gw1, ...) gets its own block instead.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    low = 20000 + 1000 * (int(worker) % 12 if worker.isdigit() else 0)
    return range(low, low + 1000)


_block = _port_block()
_start = random.randrange(len(_block))  # two test runs at once (two engineers) rarely meet
_ports = itertools.cycle([*_block[_start:], *_block[:_start]])


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, from this process's own block."""
    for _ in range(1000):
        port = next(_ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in this test process's block")


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def render_toml(sections: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


def _with_route(msrp: dict[str, object]) -> dict[str, object]:
    if "route" not in msrp:
        return {"route": str(CMAP_ROUTE), **msrp}
    return {k: v for k, v in msrp.items() if not (k == "route" and v is None)}


class Relay:
    def __init__(
        self,
        children: int = 2,
        core: dict[str, object] | None = None,
        msrp: dict[str, object] | None = None,
        tls: dict[str, object] | None = None,
        users: bool = True,
        limits: dict[str, object] | None = None,
        websocket: dict[str, object] | None = None,
        pure: bool | None = None,
    ) -> None:
        """`limits`: the [limits] section (msrpd's defaults for the keys it leaves out);
        None: LIMITS_OFF. `websocket`: the [websocket] section, and a ws: listener (and wss:
        with `tls`). `pure`: run the CLI, and so the relay, with MSRPD_PURE=1 (True) or
        without it (False); None: as this process runs."""
        self.env = dict(os.environ) if pure is None else environment(pure)
        self.run_dir = Path(tempfile.mkdtemp(prefix="msrpd-t"))
        self.config = self.run_dir / "msrpd.toml"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ws_port = free_port() if websocket is not None else None
        self.wss_port = free_port() if websocket is not None and tls else None
        listen = self._listen()
        users_file = self.run_dir / "users.sqlite"
        store = SqliteUsers(users_file)
        for name, password in PASSWORDS.items():
            store.add(name, REALM, password)
        store.close()
        self.sections: dict[str, dict[str, object]] = {
            "core": {
                "children": children,
                "listen": listen,
                "run_dir": str(self.run_dir),
                "drain_timeout": 5,
                "log_level": "debug",
                **(core or {}),
            },
            "msrp": _with_route(msrp or {}),
            "limits": dict(LIMITS_OFF if limits is None else limits),
            "auth": {"realm": REALM, "users": str(users_file)} if users else {},
            "tls": dict(tls or {}),
            "websocket": dict(websocket or {}),
        }
        self.write_config()
        self.prefix = instance_prefix(self.run_dir)
        self.started_pids: set[int] = set()

    def write_config(self) -> None:
        self.config.write_text(render_toml(self.sections))

    def _listen(self) -> list[str]:
        """The listen entries on the ports this object picked."""
        ports = (
            ("tcp", self.port),
            ("tls", self.tls_port),
            ("ws", self.ws_port),
            ("wss", self.wss_port),
        )
        return [f"{proto}:127.0.0.1:{port}" for proto, port in ports if port]

    def _repick_ports(self) -> None:
        """New ports for every listener this object picked (those it had are taken)."""
        self.port = free_port()
        self.tls_port = self.tls_port and free_port()
        self.ws_port = self.ws_port and free_port()
        self.wss_port = self.wss_port and free_port()
        self.sections["core"]["listen"] = self._listen()
        self.write_config()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "msrpd", *args, "-c", str(self.config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )

    def start(self, repick: bool = True) -> subprocess.CompletedProcess[str]:
        """`msrpd start`. When a port this object picked turned out taken meanwhile (another
        test run on the machine: the relay refuses a port another program listens on), on
        new ports, up to three times, unless `repick` is False; ports a test chose itself
        are left as they are."""
        result = self.cli("start")
        for _ in range(3 if repick else 0):
            taken = result.returncode != 0 and "in use by another program" in result.stderr
            if not (taken and self.sections["core"]["listen"] == self._listen()):
                break
            self._repick_ports()
            result = self.cli("start")
        pid = self.pid()
        if pid:
            self.started_pids.add(pid)
        return result

    def pid(self) -> int | None:
        try:
            return int((self.run_dir / "msrpd.pid").read_text())
        except (OSError, ValueError):
            return None

    def supervisor(self) -> psutil.Process:
        pid = self.pid()
        assert pid is not None, "no pidfile"
        return psutil.Process(pid)

    def workers(self) -> list[psutil.Process]:
        return self.supervisor().children()

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}

    def log(self) -> str:
        try:
            return (self.run_dir / "msrpd.log").read_text()
        except OSError:
            return ""

    def shm_segments(self) -> list[str]:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(self.prefix))

    def settings(self):  # type: ignore[no-untyped-def]
        return load_config(self.config)

    def counters(self) -> dict[str, int]:
        """The counters summed over the workers, once each has published what it counted
        (about once a second), read from shared memory."""
        time.sleep(1.2)
        shm = layout_for(self.settings()).attach_all()
        try:
            return dict(shm.stats.total())
        finally:
            shm.close()

    def stop(self) -> None:
        if self.pid() is not None:
            self.cli("stop", "--timeout", "15")
        for pid in self.started_pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                for child in proc.children(recursive=True):
                    child.kill()
                proc.send_signal(signal.SIGKILL)
        for name in self.shm_segments():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")
        shutil.rmtree(self.run_dir, ignore_errors=True)
