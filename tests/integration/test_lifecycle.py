"""msrpd start / status / stop / check-config through the real CLI, real processes."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import psutil

from ..msrpclient import MsrpClient
from .relay import Relay, exited, title, wait_for


def test_start_status_stop_leaves_nothing_behind(make_relay) -> None:
    """1. start returns 0 once workers accept; 2. status says running with 2 workers;
    3. stop waits for the processes; 4. no pidfile, fifo, sockets or shm segments remain."""
    relay: Relay = make_relay(children=2)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    assert "msrpd started" in result.stdout
    pid = relay.pid()
    assert pid is not None
    with MsrpClient(relay.port) as client:
        client.request("SEND", f"msrp://127.0.0.1:{relay.port}/nosuch;tcp")
        assert client.recv().frame.code == 481
    status = relay.cli("status")
    assert status.returncode == 0
    assert f"pid {pid}" in status.stdout and "2 workers" in status.stdout
    assert {title(p) for p in relay.workers()} == {"msrpd: worker 0", "msrpd: worker 1"}
    assert title(relay.supervisor()) == "msrpd: supervisor"
    assert relay.shm_segments()
    family = [relay.supervisor(), *relay.workers()]

    stopped = relay.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert all(exited(p) for p in family)
    assert not (relay.run_dir / "msrpd.pid").exists()
    assert not (relay.run_dir / "msrpd.fifo").exists()
    assert not list(relay.run_dir.glob("*.sock"))
    assert relay.shm_segments() == []
    assert relay.cli("status").returncode == 3
    assert relay.cli("stop").returncode == 1


ADOPTER = """
import ctypes, os, subprocess, sys
# PR_SET_CHILD_SUBREAPER (36): the daemon's supervisor, orphaned by start's double fork, is
# adopted here rather than by init, and stays a zombie until the test closes our stdin.
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
start = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True, text=True)
print(start.returncode, start.stderr.replace(chr(10), " "), flush=True)
sys.stdin.read()
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_stop_returns_when_the_supervisor_exited_though_not_reaped(make_relay) -> None:
    """What adopted the daemon (init, a container's pid 1) may reap it late or never: `stop`
    returns 0 once every process has exited, the supervisor a zombie, not at its timeout."""
    relay: Relay = make_relay(children=2)
    start = [sys.executable, "-m", "msrpd", "start", "-c", str(relay.config)]
    adopter = subprocess.Popen(
        [sys.executable, "-c", ADOPTER, *start],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert adopter.stdout is not None and adopter.stdin is not None
        assert adopter.stdout.readline().startswith("0 "), relay.log()
        pid = relay.pid()
        assert pid is not None
        relay.started_pids.add(pid)
        supervisor = psutil.Process(pid)
        assert supervisor.ppid() == adopter.pid
        family = [supervisor, *relay.workers()]
        stopped = relay.cli("stop", "--timeout", "10")
        assert stopped.returncode == 0, stopped.stderr
        assert supervisor.status() == psutil.STATUS_ZOMBIE  # exited, and nobody reaped it
        assert all(exited(p) for p in family)
        assert not (relay.run_dir / "msrpd.pid").exists()
        assert relay.shm_segments() == []
        assert relay.cli("status").returncode == 3
    finally:
        adopter.communicate("", timeout=30)  # EOF: it reaps what it adopted, and exits
    assert not psutil.pid_exists(pid)


def test_second_start_is_refused(relay: Relay) -> None:
    again = relay.cli("start")
    assert again.returncode == 4
    assert "already running" in again.stderr


def test_check_config_reports_every_problem(make_relay) -> None:
    relay: Relay = make_relay()
    assert relay.cli("check-config").returncode == 0
    relay.sections["core"]["children"] = 0
    relay.sections["msrp"]["cmap_size"] = 99
    relay.write_config()
    bad = relay.cli("check-config")
    assert bad.returncode == 2
    assert "core.children" in bad.stderr and "msrp.cmap_size" in bad.stderr
    assert relay.cli("start").returncode == 2


def test_route_with_syntax_error_fails_check_config_with_line(make_relay) -> None:
    relay: Relay = make_relay()
    script = relay.run_dir / "broken.py"
    script.write_text("def ksr_msrp_event(msrp):\n    return (\n")
    relay.sections["msrp"]["route"] = str(script)
    relay.write_config()
    bad = relay.cli("check-config")
    assert bad.returncode == 2
    assert f"{script}:2" in bad.stderr or f"{script}:3" in bad.stderr


def test_worker_boot_failure_halts_with_a_reason(make_relay, tmp_path) -> None:
    """A worker that cannot boot (an unreadable TLS certificate passes check-config but fails
    when the worker loads it) makes start fail with exit 3; no fork loop, nothing left."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    relay: Relay = make_relay(tls={"certificate": str(cert), "private_key": str(cert)})
    started = time.monotonic()
    result = relay.start()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "failed to boot" in result.stderr
    assert time.monotonic() - started < 15
    assert relay.pid() is None
    assert relay.shm_segments() == []


def test_killed_worker_is_replaced_and_service_continues(make_relay) -> None:
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0
    before = relay.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: len(relay.worker_pids() - {victim}) == 2, 5, "a replacement worker")
    assert time.monotonic() - t0 < 2.0
    assert victim not in relay.worker_pids()
    for _ in range(10):
        with MsrpClient(relay.port) as client:
            client.request("SEND", f"msrp://127.0.0.1:{relay.port}/nosuch;tcp")
            assert client.recv().frame.code == 481


def test_hung_worker_is_killed_and_replaced(make_relay, tmp_path) -> None:
    """A route that blocks the event loop stops the heartbeat; the supervisor kills the
    worker (SIGABRT, then SIGKILL) and starts another."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import time\n\n"
        "def ksr_msrp_event(msrp):\n"
        "    if msrp.method == 'SEND':\n"
        "        time.sleep(3600)\n"
    )
    relay: Relay = make_relay(
        children=1, core={"heartbeat_timeout": 1.5}, msrp={"route": str(script)}
    )
    assert relay.start().returncode == 0
    (victim,) = relay.worker_pids()
    with MsrpClient(relay.port) as client:
        client.request("SEND", f"msrp://127.0.0.1:{relay.port}/x;tcp")
        wait_for(lambda: victim not in relay.worker_pids(), 10, "the hung worker to be killed")
    wait_for(lambda: len(relay.worker_pids()) == 1, 5, "a replacement")
    assert "missed its heartbeat" in relay.log()


def test_crashed_run_is_cleaned_at_next_start(make_relay) -> None:
    """SIGKILL the supervisor: workers notice and exit (no orphans); the pidfile and shm
    segments stay behind; the next start cleans them and runs."""
    relay: Relay = make_relay(children=2)
    assert relay.start().returncode == 0
    supervisor = relay.supervisor()
    workers = relay.workers()
    supervisor.kill()
    wait_for(lambda: exited(supervisor), 5, "the supervisor to die")
    wait_for(lambda: all(exited(w) for w in workers), 5, "the workers to exit (no orphans)")
    assert relay.pid() is not None and relay.shm_segments()
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    assert "removed what a crashed run left" in relay.log()
    with MsrpClient(relay.port) as client:
        client.request("SEND", f"msrp://127.0.0.1:{relay.port}/nosuch;tcp")
        assert client.recv().frame.code == 481


def test_fast_stop_and_children_override(make_relay) -> None:
    """`start` honours --children over the file; `stop --now` ends it promptly (SIGQUIT)."""
    relay: Relay = make_relay(children=2)
    result = relay.cli("start", "--children", "3")
    relay.started_pids.add(relay.pid() or 0)
    assert result.returncode == 0, result.stderr
    assert len(relay.worker_pids()) == 3
    with MsrpClient(relay.port):
        started = time.monotonic()
        stopped = relay.cli("stop", "--now")
        assert stopped.returncode == 0
        assert time.monotonic() - started < 4.0  # an open connection does not hold it up
    assert relay.pid() is None


def test_ipv6_listener(make_relay) -> None:
    relay: Relay = make_relay(children=1)
    relay.sections["core"]["listen"] = [f"tcp:[::1]:{relay.port}"]
    relay.write_config()
    assert relay.start().returncode == 0, relay.log()
    with MsrpClient(relay.port, host="::1") as client:
        client.request("SEND", f"msrp://[::1]:{relay.port}/nosuch;tcp")
        reply = client.recv().frame
        assert reply.code == 481
        assert reply.to_path == [client.uri]


def test_usr1_reopens_the_log_file(relay: Relay) -> None:
    log = relay.run_dir / "msrpd.log"
    rotated = log.with_suffix(".log.1")
    log.rename(rotated)
    relay.supervisor().send_signal(signal.SIGUSR1)
    wait_for(log.exists, 5, "a new log file")
    relay.supervisor().send_signal(signal.SIGHUP)
    wait_for(lambda: "reload" in log.read_text(), 10, "reload lines in the new file")


def test_embedded_defaults_run_with_no_config_file(tmp_path) -> None:
    """README's run command: no config file at all; 127.0.0.1:2855, the bundled relay route
    (issue 14: AUTH over plain TCP is refused, nothing is forwarded without a token).
    XDG_RUNTIME_DIR keeps the run_dir inside this test."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "msrpd"]
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, check=False)
    started = run([*cmd, "start"], timeout=60)
    try:
        assert started.returncode == 0, started.stderr
        with MsrpClient(2855) as client:
            client.request("AUTH", "msrp://127.0.0.1:2855;tcp")
            assert client.recv().frame.code == 403
            client.request("SEND", "msrp://127.0.0.1:2855/anything;tcp msrp://127.0.0.1:9/x;tcp")
            assert client.recv().frame.code == 481
        assert run([*cmd, "status"], timeout=30).returncode == 0
    finally:
        stopped = run([*cmd, "stop"], timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "msrpd" / "msrpd.pid").exists()
