"""The relays under test: msrpd through its CLI, Kamailio through the oracle's run-kamailio.sh.

Each relay gets its own temporary run directory and a free port on 127.0.0.1, and is stopped
the way it was started (msrpd stop -c FILE, run-kamailio.sh stop with the same KAM_RUN_DIR):
nothing here signals a process it did not start.

msrpd runs one of two routes (`route`):
- cmap: Kamailio's example route, as the oracle runs; plain TCP, any user with password
  xyz123 in realm myrealm (no user store).
- relay: the default RFC 4976 relay route. It takes AUTH over TLS only and checks digests
  against a user store, so the relay also listens on TLS (a certificate made for 127.0.0.1 in
  its run_dir) and gets `[auth] users` (add_users puts the load's users there, password
  xyz123); Bob AUTHs and stays on TLS, Alice stays on plain TCP.
Either way the abuse limits ([limits]) that count connections or sessions are off (every
client comes from 127.0.0.1) and the session rates are out of reach.
"""

from __future__ import annotations

import contextlib
import json
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

from msrpd.hotpath import environment

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT.parent / "shared" / "oracle"
ROUTES = ("cmap", "relay")
PASSWORD = "xyz123"
REALM = "myrealm"

_ADD_USERS = """
import sys
from pathlib import Path
from msrpd.users.sqlite import SqliteUsers
store = SqliteUsers(Path(sys.argv[1]))
names = sys.stdin.read().split()
db = store._conn()
db.execute("BEGIN")
for name in names:
    store.add(name, sys.argv[2], sys.argv[3])
db.execute("COMMIT")
"""
"""Run by the msrpd under test (cwd ROOT): its own user store code, one transaction."""


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
    redis: float | None = None
    """A cluster's Redis server: its CPU seconds, not in `cpu` (benchlib/cluster.py)."""


class Relay:
    name = "relay"
    auth_nodes: tuple[tuple[int, bytes], ...] = ()
    """A cluster's nodes, (TLS port, AUTH URI) each: Alice and Bob then both AUTH, on two
    nodes (cluster.py); (): Alice only connects to `port`."""

    def __init__(self, children: int) -> None:
        self.children = children
        self.port = free_port()
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name[:3]}-"))

    label = "relay"
    """the name report lines give it."""
    tls_ca = ""
    """a CA file Bob must trust to AUTH over TLS; "": he AUTHs over plain TCP."""

    @property
    def relay_uri(self) -> bytes:
        return b"msrp://127.0.0.1:%d;tcp" % self.port

    @property
    def auth_port(self) -> int:
        """Where Bob connects to AUTH (and stays)."""
        return self.port

    @property
    def auth_uri(self) -> bytes:
        """What Bob's AUTH is addressed to."""
        return self.relay_uri

    def add_users(self, names: list[str]) -> None:
        """Users the load will AUTH as (password xyz123): only a user store needs them."""

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


def _msrpd_python(
    code: str, *args: str, stdin: str = "", pure: bool = False
) -> subprocess.CompletedProcess[str]:
    """Python code run against the msrpd under test (this tree: cwd ROOT, not an install)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        cwd=ROOT,
        env=environment(pure),
    )


def hot_build(pure: bool) -> str:
    """Which path the msrpd under test runs, and how it was built ("compiled", "compiled,
    profile-guided" or "pure": msrpd.hot_build), asked of this tree."""
    return _msrpd_python("import msrpd; print(msrpd.hot_build())", pure=pure).stdout.strip()


def make_certificate(run_dir: Path) -> tuple[Path, Path, Path]:
    """(certificate, key, CA to trust) for 127.0.0.1 and localhost: trustme when importable,
    else a self-signed one from `openssl req -x509` (then the certificate is its own CA)."""
    cert, key, ca_file = run_dir / "relay.pem", run_dir / "relay.key", run_dir / "ca.pem"
    try:
        import trustme  # noqa: PLC0415 (optional)
    except ImportError:
        key_type = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
        subject = ("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        files = ("-keyout", str(key), "-out", str(cert))
        subprocess.run(
            ["openssl", "req", "-x509", *key_type, "-days", "2", *subject, *files],
            check=True,
            capture_output=True,
            timeout=60,
        )
        shutil.copyfile(cert, ca_file)
        return cert, key, ca_file
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file


class Msrpd(Relay):
    name = "msrpd"

    def __init__(
        self,
        children: int,
        extra: list[str] | None = None,
        route: str = "cmap",
        bob_tls: bool | None = None,
        pure: bool = False,
    ) -> None:
        """`pure`: msrpd runs its .py sources (MSRPD_PURE=1) even where it is compiled."""
        super().__init__(children)
        self.pure = pure
        if route not in ROUTES:
            raise ValueError(f"route {route!r}: one of {', '.join(ROUTES)}")
        self.route = route
        self.label = f"msrpd, {route} route"
        self.ws_port = free_port()
        self.config = self.run_dir / "msrpd.toml"
        self.tls_port = 0
        self.users = self.run_dir / "users.sqlite"
        self.wrap: tuple[list[str], dict[str, str]] = ([], {})
        """A command prefix and environment msrpd starts under (callgrind.wrapper)."""
        # ws: for --alice-ws; a listener nobody uses costs nothing
        listen = [f"tcp:127.0.0.1:{self.port}", f"ws:127.0.0.1:{self.ws_port}"]
        sections: dict[str, dict[str, str]] = {
            "core": {
                "children": str(children),
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
        }
        if route == "cmap":
            # Kamailio's example route, as the oracle runs; an `msrp.route=...` option picks
            # another.
            sections["msrp"] = {"route": f'"{ROOT / "msrpd" / "routing" / "routes" / "cmap.py"}"'}
        else:  # the default route: [msrp] route unset
            sections["auth"] = {"users": f'"{self.users}"', "realm": f'"{REALM}"'}
            self.add_users([])  # the store exists before the relay starts
        if bob_tls is None:
            bob_tls = route == "relay"
        if bob_tls:
            # The relay route takes AUTH over TLS only; the cmap route may be given the same
            # TLS leg, so that the two routes are compared on the same transports.
            self.tls_port = free_port()
            listen.append(f"tls:127.0.0.1:{self.tls_port}")
            cert, key, ca_file = make_certificate(self.run_dir)
            self.tls_ca = str(ca_file)
            sections["tls"] = {"certificate": f'"{cert}"', "private_key": f'"{key}"'}
            self.label += " (Bob over TLS)"
        sections["core"]["listen"] = "[" + ", ".join(f'"{a}"' for a in listen) + "]"
        for item in extra or ():
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            sections.setdefault(section, {})[name] = value
            if (section, name) == ("msrp", "route"):  # a route named by an option ran
                named = Path(value.strip().strip('"')).stem
                self.label = f"msrpd, {named} route" + (" (Bob over TLS)" if self.tls_port else "")
        self.sections = sections
        """The config's sections, TOML values as text (a cluster node's are changed, then
        write_config is called again)."""
        self.write_config()

    def write_config(self) -> None:
        self.config.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                for section, keys in self.sections.items()
            )
        )

    @property
    def auth_port(self) -> int:
        return self.tls_port or self.port

    @property
    def auth_uri(self) -> bytes:
        if self.tls_port:
            return b"msrps://127.0.0.1:%d;tcp" % self.tls_port
        return self.relay_uri

    def add_users(self, names: list[str]) -> None:
        if self.route == "relay":
            _msrpd_python(_ADD_USERS, str(self.users), REALM, PASSWORD, stdin="\n".join(names))

    def _cli(self, *args: str, wrap: bool = False) -> subprocess.CompletedProcess[str]:
        prefix, env = self.wrap if wrap else ([], {})
        return subprocess.run(
            [*prefix, sys.executable, "-m", "msrpd", *args, "-c", str(self.config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=600 if prefix else 60,
            env={**environment(self.pure), **env},
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )

    def main_pid(self) -> int | None:
        try:
            return int((self.run_dir / "msrpd.pid").read_text())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        result = self._cli("start", wrap=True)
        if result.returncode != 0:
            raise RuntimeError(f"msrpd start failed ({result.returncode}): {result.stderr}")
        version = json.loads(self._cli("ctl", "--json", "core.version").stdout)
        self.label += f", {version['hot_build']}"

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
    name = label = "kamailio"
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
    name: str,
    children: int,
    oracle: Path = ORACLE,
    msrpd_options: list[str] | None = None,
    route: str = "cmap",
    bob_tls: bool | None = None,
    pure: bool = False,
) -> Relay:
    """`msrpd_options`: "section.key=TOML value" lines added to msrpd's config; `route`:
    msrpd's route (Kamailio always runs its cmap config); `bob_tls`: Bob AUTHs and stays on
    a TLS listener (None: for the relay route only, which takes AUTH over TLS only); `pure`:
    msrpd runs its .py sources (MSRPD_PURE=1)."""
    if name == "msrpd":
        return Msrpd(children, msrpd_options, route, bob_tls, pure)
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
