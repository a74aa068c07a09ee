"""The supervisor's small pieces, each with real inputs: the settings a reload switches to, the
signal inbox (real signals), the readiness pipe (a real pipe), the sweep of expired items (real
shared memory) and the select loop's service of the control fifo (a real fifo)."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import time
from pathlib import Path

import pytest

from msrpd.config import load_config
from msrpd.control.fifo import ControlServer
from msrpd.control.rpc import dispatcher
from msrpd.errors import ConfigError
from msrpd.hotpath import pure_requested
from msrpd.routing import DEFAULT_ROUTE, RouteLoadError
from msrpd.shm import CmapEntry, ShmSet
from msrpd.supervisor.ready import ReadyPipe
from msrpd.supervisor.reload import reload_settings
from msrpd.supervisor.services import Services
from msrpd.supervisor.signals import SIGNALS, SignalInbox
from msrpd.supervisor.sweeper import Sweeper


def test_reload_reads_the_file_again_and_keeps_what_needs_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "msrpd.toml"
    conf.write_text('[core]\nrun_dir = "a"\nchildren = 2\n[msrp]\ncmap_size = 4\n')
    old = load_config(conf)
    conf.write_text('[core]\nrun_dir = "b"\nchildren = 3\n[msrp]\ncmap_size = 6\nmax_body = 2048\n')
    with caplog.at_level(logging.INFO):
        new = reload_settings(old, children=None)
    assert new.core.children == 3 and new.msrp.max_body == 2048  # the new file
    assert new.core.run_dir == tmp_path / "a" and new.msrp.cmap_size == 4  # kept
    assert "cmap_size and cmap_max_entries need a restart" in caplog.text
    assert "run_dir needs a restart" in caplog.text
    # The default route as shipped: its compiled module on the compiled path (routing/script.py).
    how = "interpreted" if pure_requested() else "compiled"
    assert f"reload: route {DEFAULT_ROUTE.resolve()} ({how})" in caplog.text
    assert reload_settings(old, children=5).core.children == 5  # --children still wins


def test_a_bad_file_or_script_refuses_the_reload(tmp_path: Path) -> None:
    conf = tmp_path / "msrpd.toml"
    conf.write_text("")
    old = load_config(conf)
    conf.write_text("[core]\nchildren = 0\n")
    with pytest.raises(ConfigError, match=r"core\.children"):
        reload_settings(old, children=None)
    (tmp_path / "route.py").write_text("def other(msg):\n    pass\n")
    conf.write_text('[msrp]\nroute = "route.py"\n')
    with pytest.raises(RouteLoadError):
        reload_settings(old, children=None)


def test_signals_queue_up_in_order_and_wake_the_loop() -> None:
    inbox = SignalInbox()
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        inbox.install()
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGUSR1)
        assert select.select([inbox.wake_r], [], [], 1.0)[0] == [inbox.wake_r]
        inbox.drain()
        assert select.select([inbox.wake_r], [], [], 0)[0] == []
        assert [inbox.next(), inbox.next(), inbox.next()] == ["hup", "usr1", None]
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        inbox.close()


def test_the_ready_pipe_says_one_line_then_closes() -> None:
    r, w = os.pipe()
    ready = ReadyPipe(w)
    ready.notify("ok")
    ready.notify("error: too late")  # the pipe is closed: nothing more
    with os.fdopen(r, "rb") as pipe:
        assert pipe.read() == b"ok\n"  # EOF: the write end is closed
    ReadyPipe(None).notify("ok")  # in the foreground: no pipe, nothing to do


def test_the_sweep_removes_expired_items_once_per_interval(shm: ShmSet) -> None:
    now = time.time()
    assert shm.cmap.save(CmapEntry("old", 1, "p", "msrp://h:1", "tcp:x", now - 1))
    assert shm.cmap.save(CmapEntry("new", 2, "p", "msrp://h:1", "tcp:x", now + 60))
    sweeper = Sweeper(shm)
    sweeper.sweep(60.0)
    assert [e.sessid for e in shm.cmap.entries()] == ["new"]
    assert shm.cmap.save(CmapEntry("old2", 3, "p", "msrp://h:1", "tcp:x", now - 1))
    sweeper.sweep(60.0)  # the interval has not passed
    assert sorted(e.sessid for e in shm.cmap.entries()) == ["new", "old2"]


def test_services_answer_the_fifo_and_return_on_a_signal(run_dir: Path) -> None:
    control = ControlServer(run_dir / "msrpd.fifo", dispatcher({"ping": lambda params: "pong"}))
    control.open()
    inbox = SignalInbox()
    services = Services(inbox, control, None)
    try:
        os.mkfifo(run_dir / "reply", 0o600)
        reply = os.open(run_dir / "reply", os.O_RDONLY | os.O_NONBLOCK)
        request = {"jsonrpc": "2.0", "method": "ping", "id": 7, "reply_name": "reply"}
        writer = os.open(run_dir / "msrpd.fifo", os.O_WRONLY)
        os.write(writer, json.dumps(request).encode() + b"\n")
        os.close(writer)
        services.wait(1.0)
        assert json.loads(os.read(reply, 4096)) == {"jsonrpc": "2.0", "result": "pong", "id": 7}
        os.close(reply)
        inbox.pending.append(signal.SIGTERM)  # as the handler would
        started = time.monotonic()
        services.wait(5.0)
        assert time.monotonic() - started < 1.0  # a pending signal: no waiting
    finally:
        services.close()
        inbox.close()
    assert not (run_dir / "msrpd.fifo").exists()
