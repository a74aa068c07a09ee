from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .redisserver import REDIS_SERVER, RedisServer
from .relay import Relay


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """A started relay with two workers."""
    r = make_relay(children=2)
    result = r.start()
    assert result.returncode == 0, result.stderr + r.log()
    return r


_CLUSTER_SKIPPED: list[str] = []


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1 (redisserver.py), stopped after the test. Without
    redis-server the test skips, and the terminal summary says so in red."""
    if REDIS_SERVER is None:
        _CLUSTER_SKIPPED.append(request.node.nodeid)
        pytest.skip(
            "CLUSTER NOT TESTED: redis-server is not installed (apt-get install redis-server)"
        )
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _CLUSTER_SKIPPED:
        terminalreporter.write_sep("!", "CLUSTER TESTS WERE SKIPPED: NO redis-server", red=True)
        for nodeid in _CLUSTER_SKIPPED:
            terminalreporter.write_line(f"  {nodeid}", red=True)
