"""The listen backlog the kernel really uses (issue 12 item 7): `[core] backlog`, capped at
net.core.somaxconn, not asyncio's 100 (create_server listens again with its own value)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from msrpd.config import CoreSettings

from .relay import Relay

SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())


def kernel_backlogs(port: int) -> list[int]:
    """The backlog of every socket listening on `port`: `ss -ltn` shows it as Send-Q."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    return [int(line.split()[2]) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        (None, min(CoreSettings().backlog, SOMAXCONN)),
        (1500, min(1500, SOMAXCONN)),
        (SOMAXCONN + 1000, SOMAXCONN),
    ],
)
def test_listening_sockets_use_the_configured_backlog(make_relay, configured, expected) -> None:
    core = {} if configured is None else {"backlog": configured}
    relay: Relay = make_relay(children=2, core=core)
    assert relay.start().returncode == 0, relay.log()
    # One SO_REUSEPORT socket per worker, each listened on again by its worker's create_server.
    assert kernel_backlogs(relay.port) == [expected, expected]
    assert CoreSettings().backlog >= 1024
    if configured is not None and configured > SOMAXCONN:
        assert "capped at net.core.somaxconn" in relay.log()
