"""The control fifo of a real, running msrpd with real traffic (skipped until it is wired).

1. A relay with two workers is started through the CLI; the test is skipped when the
   supervisor does not serve the control fifo (before the supervisor integration lands).
2. Alice and Bob AUTH and exchange SENDs; the methods are asked through `msrpd ctl`
   (a subprocess) and msrpd.control.client.call.
3. Every assertion is about what the relay really did: counters move by exactly the traffic
   sent, the cmap holds the two sessions, session_kill closes Bob's socket, a log.level
   change shows in the workers' log lines, reload starts generation 2, shutdown stops it.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from msrpd.control.client import call
from msrpd.rundir import fifo_path

from ..integration.relay import PASSWORDS, REALM, Relay, wait_for
from ..msrpclient import MsrpClient


@pytest.fixture
def launched(make_relay: Callable[..., Relay]) -> tuple[Relay, float]:
    """A running relay, and time.monotonic() from before it was started."""
    before = time.monotonic()
    relay = make_relay(children=2)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    assert fifo_path(relay.settings()).exists(), "the supervisor serves the control fifo"
    return relay, before


@pytest.fixture
def relay(launched: tuple[Relay, float]) -> Relay:
    return launched[0]


def ctl(relay: Relay, method: str, *params: str) -> Any:
    result = relay.cli("ctl", "--json", method, *params)
    assert result.returncode == 0, result.stderr + relay.log()
    return json.loads(result.stdout)


def authed(relay: Relay, user: str) -> MsrpClient:
    client = MsrpClient(relay.port)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def exchange(alice: MsrpClient, bob: MsrpClient, body: bytes) -> None:
    tid = alice.send_message(bob, body)
    assert alice.recv().frame.code == 200
    assert bob.recv().frame.tid == tid


def test_methods_against_real_traffic(launched: tuple[Relay, float]) -> None:
    relay, launched_at = launched
    rows = ctl(relay, "core.ps")
    assert [r["role"] for r in rows] == ["supervisor", "worker", "worker"]
    assert rows[0]["pid"] == relay.pid()
    assert {r["pid"] for r in rows[1:]} == relay.worker_pids()
    # uptime is whole seconds (int() of the time since the supervisor started): never more
    # than the time since the test started it, and growing with the time the test waits.
    asked = time.monotonic()
    first = ctl(relay, "core.uptime")["uptime"]
    answered = time.monotonic()
    assert first <= answered - launched_at
    with authed(relay, "alice") as alice, authed(relay, "bob") as bob:
        time.sleep(1.2)  # workers publish their counters once a second
        before = ctl(relay, "stats.get")["total"]
        for i in range(5):
            exchange(alice, bob, b"hi %d" % i)
            exchange(bob, alice, b"ho %d" % i)

        def moved() -> dict[str, int]:
            total = ctl(relay, "stats.get")["total"]
            return {k: total[k] - before[k] for k in ("frames_in_send", "replies_2xx")}

        wait_for(lambda: moved() == {"frames_in_send": 10, "replies_2xx": 10}, 5.0, "counts")
        time.sleep(1.2)
        assert moved() == {"frames_in_send": 10, "replies_2xx": 10}  # exactly, no more
        waited = time.monotonic() - answered  # two 1.2 s sleeps and the exchanges: over 2 s
        second = ctl(relay, "core.uptime")["uptime"]
        assert second <= time.monotonic() - launched_at
        assert math.floor(waited) <= second - first <= math.ceil(time.monotonic() - asked)
        per_worker = ctl(relay, "stats.get", "frames_in_send")["workers"]
        assert sum(w["frames_in_send"] for w in per_worker) == 10 + before["frames_in_send"]
        assert ctl(relay, "stats.reset") == {"reset": True}
        assert ctl(relay, "stats.get", "frames")["total"]["frames_in_send"] == 0
        cmap = ctl(relay, "msrp.cmaplist")
        sessions = {c["CONDATA"]["SESSIONID"] for c in cmap["CONLIST"]}
        assert cmap["CONCOUNT"] == 2
        assert all(s in (alice.use_path or "") + (bob.use_path or "") for s in sessions)
        conns = ctl(relay, "msrp.conns")
        peers = {r["peer"] for r in conns}
        assert {f"tcp:{alice.sock.getsockname()[0]}:{alice.sock.getsockname()[1]}"} <= peers
        assert all(r["bytes_in"] > 0 for r in conns)
        bob_session = next(s for s in sessions if s in (bob.use_path or ""))
        assert ctl(relay, "msrp.session_kill", bob_session)["closed"] is True
        with pytest.raises(EOFError):
            bob.recv(timeout=5)
        assert ctl(relay, "msrp.cmaplist")["CONCOUNT"] == 1


def test_log_level_changes_what_workers_log(relay: Relay) -> None:
    bad = (
        b"MSRP bad1 SEND\r\nTo-Path: msrp://x:1/s;tcp\r\nFrom-Path: msrp://y:2/c;tcp\r\n"
        b"no colon here\r\n-------bad1$\r\n"
    )
    out = ctl(relay, "log.level", "warning")
    assert [w["level"] for w in out["workers"]] == ["warning", "warning"]
    with MsrpClient(relay.port) as client:
        client.send_raw(bad)
        assert client.recv().frame.code == 400
    time.sleep(0.3)
    assert "invalid frame b'bad1'" not in relay.log()
    ctl(relay, "log.level", "info")
    with MsrpClient(relay.port) as client:
        client.send_raw(bad)
        assert client.recv().frame.code == 400
    wait_for(lambda: "invalid frame b'bad1'" in relay.log(), 5.0, "the info line")


def test_concurrent_and_malformed_requests_on_the_live_fifo(relay: Relay) -> None:
    settings = relay.settings()
    fifo = fifo_path(settings)
    out = os.open(fifo, os.O_WRONLY)
    os.write(out, b"garbage\n" + b'{"reply_name": "x", "pad": "' + b"z" * 70000 + b'"}\n')
    os.close(out)
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait()
        results.append(call(settings, "core.uptime", None, 10.0))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 8 and all("uptime" in r for r in results)
    assert "dropped" in relay.log()


def test_reload_then_shutdown(relay: Relay) -> None:
    assert ctl(relay, "core.reload") == {"reload": "requested"}

    def second_generation() -> bool:
        rows = ctl(relay, "core.ps")
        return sorted(r["generation"] for r in rows[1:]) == [2, 2]

    wait_for(second_generation, 15.0, "generation 2 alone")
    pid = relay.pid()
    assert ctl(relay, "core.shutdown") == {"shutdown": "requested"}
    wait_for(lambda: relay.pid() is None, 15.0, "the supervisor to stop")
    assert pid is not None
    assert not fifo_path(relay.settings()).exists()
