"""The `msrpd` command line (click).

Rules: settings live in the config file, not in flags (style rule 19); every command takes
`-c FILE` to find that instance's run_dir, pidfile and fifo. stop and reload send a signal from
one table (nginx's signals[]). Exit codes, for scripts and init systems:

  0  success
  1  not running (stop, reload), or a failed command
  2  the configuration or the routing script is invalid
  3  start failed (a worker could not boot, a socket could not be bound); status: not running
  4  another msrpd already runs with this run_dir
  5  stop timed out: processes were still alive after --timeout
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import psutil

from .. import __version__, hot_build
from ..config import Settings
from ..control.client import CtlUnavailable, call, ctl, render
from ..process.logs import setup_logging
from ..rundir import EXIT_ALREADY_RUNNING, log_path, read_pid
from .options import config_option, settings_or_exit
from .user import user

if TYPE_CHECKING:
    from ..supervisor.arbiter import Supervisor

__all__ = ["main"]

EXIT_NOT_RUNNING = 1
EXIT_START_FAILED = 3
EXIT_TIMEOUT = 5
SIGNALS = {"reload": signal.SIGHUP, "stop": signal.SIGTERM, "quit": signal.SIGQUIT}


def _running_pid(settings: Settings) -> int | None:
    """The supervisor's pid, when the pidfile names a live msrpd supervisor."""
    pid = read_pid(settings)
    if pid is None:
        return None
    try:
        return None if _exited(psutil.Process(pid)) else pid
    except psutil.Error:
        return None


def _exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited and let go of everything it held (sockets, locks,
    shared memory); only its parent has not reaped it yet. The daemon supervisor's parent is
    whatever adopted it (init, a container's pid 1, a subreaper), which may reap late or never."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, prog_name="msrpd", message=f"%(prog)s %(version)s, hot path {hot_build()}"
)
def main() -> None:
    """msrpd: an MSRP relay (RFC 4975, RFC 4976)."""


@main.command()
@config_option
@click.option("--children", type=int, default=None, help="Override core.children.")
@click.option("--foreground", is_flag=True, help="Stay attached; log to stderr.")
def start(config: Path | None, children: int | None, foreground: bool) -> None:
    """Start the relay; without --foreground, return once every worker accepts."""
    settings = settings_or_exit(config, children, route=True)
    pid = _running_pid(settings)
    if pid is not None:
        click.echo(
            f"msrpd: already running (pid {pid}) with run_dir {settings.core.run_dir}", err=True
        )
        sys.exit(EXIT_ALREADY_RUNNING)
    # Imported here, not above: the supervisor brings in every worker module (0.3 s), which
    # only start needs; stop, status, reload and ctl answer without it.
    from ..supervisor.arbiter import Supervisor  # noqa: PLC0415

    supervisor = Supervisor(settings, children)
    if foreground:
        file = log_path(settings) if settings.log.target == "file" else None
        setup_logging(settings.core.log_level, settings.log, file)
        sys.exit(supervisor.run())
    sys.exit(_daemonize(settings, supervisor))


def _daemonize(settings: Settings, supervisor: Supervisor) -> int:
    settings.core.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = log_path(settings)
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as pipe:
            answer = pipe.readline().decode().strip()
        if answer == "ok":
            click.echo(f"msrpd started (pid {read_pid(settings)}); log: {log}")
            return 0
        click.echo(f"msrpd: start failed: {answer or 'see ' + str(log)}", err=True)
        return EXIT_ALREADY_RUNNING if "already running" in answer else EXIT_START_FAILED
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    # stderr (the default target) goes to the log file once detached; syslog stays syslog.
    setup_logging(
        settings.core.log_level, settings.log, None if settings.log.target == "syslog" else log
    )
    os._exit(supervisor.run(ready_w))


def _send(settings: Settings, command: str) -> int:
    pid = _running_pid(settings)
    if pid is None:
        click.echo(f"msrpd is not running (run_dir {settings.core.run_dir})", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    os.kill(pid, SIGNALS[command])
    return pid


@main.command()
@config_option
@click.option("--now", is_flag=True, help="Fast stop: do not wait for frames in flight.")
@click.option(
    "--timeout", type=float, default=None, help="Seconds to wait (default: drain_timeout + 10)."
)
def stop(config: Path | None, now: bool, timeout: float | None) -> None:
    """Stop the relay and wait until its processes are gone."""
    settings = settings_or_exit(config)
    pid = _send(settings, "quit" if now else "stop")
    try:
        proc = psutil.Process(pid)
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    wait = timeout if timeout is not None else settings.core.drain_timeout + 10.0
    deadline = time.monotonic() + wait
    alive = [p for p in family if not _exited(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _exited(p)]
    if alive:
        click.echo(
            f"msrpd: still running after {wait:.0f} s: pids {[p.pid for p in alive]}", err=True
        )
        sys.exit(EXIT_TIMEOUT)
    click.echo("msrpd stopped")


@main.command()
@config_option
def reload(config: Path | None) -> None:
    """Re-read the config and routing script; on error the old ones keep serving."""
    settings = settings_or_exit(config, route=True)
    pid = _send(settings, "reload")
    click.echo(f"reload signalled to msrpd (pid {pid})")


@main.command()
@config_option
def status(config: Path | None) -> None:
    """Say whether the relay runs, since when, and its workers."""
    settings = settings_or_exit(config)
    pid = _running_pid(settings)
    if pid is None:
        click.echo("msrpd is not running")
        sys.exit(EXIT_START_FAILED)
    proc = psutil.Process(pid)
    uptime = time.time() - proc.create_time()
    try:
        rows = call(settings, "core.ps", None, 2.0)
    except CtlUnavailable as exc:
        # The fifo does not answer (a hung supervisor, say): say so, and list what ps sees.
        workers = proc.children()
        click.echo(f"msrpd is running: pid {pid}, uptime {uptime:.0f} s, {len(workers)} workers")
        click.echo(f"(control fifo: {exc})")
        for child in workers:
            click.echo(f"  {child.pid}  {' '.join(child.cmdline()).strip() or child.name()}")
        return
    workers = [r for r in rows if r.get("role") == "worker"]
    version = call(settings, "core.version", None, 2.0)
    path = version.get("hot_build", version["hot_path"])  # a relay started before hot_build
    click.echo(
        f"msrpd is running: pid {pid}, uptime {uptime:.0f} s, {len(workers)} workers,"
        f" hot path {path}"
    )
    agent = next((r for r in rows if r.get("role") == "cluster"), None)
    if agent is not None:
        click.echo(f"cluster node {settings.cluster.node}: Redis {agent.get('redis')}")
    click.echo(render(rows))


@main.command("check-config")
@config_option
def check_config(config: Path | None) -> None:
    """Validate the config file and load the routing script."""
    settings = settings_or_exit(config, route=True)
    where = settings.source or "embedded defaults"
    click.echo(f"configuration ok ({where}); route {settings.msrp.route or 'cmap (bundled)'}")


main.add_command(ctl)
main.add_command(user)
