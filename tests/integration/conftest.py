from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .redisserver import SKIP, RedisServer, private_redis
from .relay import Relay


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """A started relay with two workers."""
    r = make_relay(children=2)
    result = r.start()
    assert result.returncode == 0, result.stderr + r.log()
    return r


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1 (redisserver.py), stopped after the test. Without
    redis-server the test skips, and the terminal summary says so in red."""
    yield from private_redis()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # From the reports, not from state kept here: under pytest-xdist the skips happen in the
    # worker processes, and only their reports reach this one.
    skipped = [
        report.nodeid
        for report in terminalreporter.stats.get("skipped", [])
        if SKIP in str(getattr(report, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_sep("!", "CLUSTER TESTS WERE SKIPPED: NO redis-server", red=True)
        for nodeid in skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)
