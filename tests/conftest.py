"""Fixtures every test directory shares.

`prefix` gives each test its own shared-memory segment prefix (derived from its tmp_path);
teardown unlinks whatever segments still carry it, so a failing test leaves nothing in
/dev/shm. `cmap` is a real connection map under that prefix. `make_relay` builds real msrpd
instances (tests/integration/relay.py) and stops every one after the test. msrpd is compiled
once when the session starts (pytest_configure).
"""

from __future__ import annotations

import compileall
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import msrpd
from msrpd.shm import Cmap, instance_prefix, segment_names, unlink_stale

from .forking import Children
from .integration.relay import Relay


def pytest_configure(config: pytest.Config) -> None:
    """Compile msrpd once, up front: the suite starts a fresh interpreter on it (the CLI)
    hundreds of times, and where PYTHONDONTWRITEBYTECODE is set none of them caches what it
    compiled, so each start compiled every module again (0.15 to 0.25 s). Only missing or
    stale files are compiled; a read-only install is left as it is."""
    compileall.compile_dir(Path(msrpd.__file__).parent, quiet=2)


FIRST = ("users", "integration", "browser", "websocket", "conformance", "control", "interop")
"""Test directories whose tests run relays, databases and browsers for seconds each (up to a
minute), heaviest first; the rest are mostly unit tests of milliseconds."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, short ones last: pytest-xdist (scripts/test) hands the list out in
    order, so a minute-long test collected last (tests/users sorts late) would run alone at
    the end while the other processes idle. A stable sort: each file's tests keep their
    order, and module-scoped fixtures their grouping."""
    top = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        parts = item.path.relative_to(top).parts
        return FIRST.index(parts[0]) if len(parts) > 1 and parts[0] in FIRST else len(FIRST)

    items.sort(key=rank)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        for pid in list(kids.live):
            kids.kill(pid)


@pytest.fixture
def prefix(tmp_path: Path) -> Iterator[str]:
    p = instance_prefix(tmp_path)
    try:
        yield p
    finally:
        unlink_stale(f"{p}-")
        assert segment_names(f"{p}-") == []


@pytest.fixture
def cmap(prefix: str, tmp_path: Path) -> Iterator[Cmap]:
    c = Cmap.create(prefix, tmp_path / "cmap.lock", 16, 1024)
    try:
        yield c
    finally:
        c.close()
        c.unlink()


RELAYS = pytest.StashKey[list[Relay]]()
"""The relays a test started (make_relay), for its report."""
LOG_TAIL = 200
"""Lines of each relay's log a failing test's report shows (the log is at debug level)."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failing test's report carries the end of the log of every relay it started: a flake
    seen once in CI is explained by what the relay wrote, not only by what the client saw."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for relay in item.stash.get(RELAYS, []):
        lines = relay.log().splitlines()[-LOG_TAIL:]
        report.sections.append((f"relay log {relay.run_dir}", "\n".join(lines)))


@pytest.fixture
def make_relay(request: pytest.FixtureRequest) -> Iterator[Callable[..., Relay]]:
    """Build Relay objects; every one is stopped and cleaned after the test."""
    relays: list[Relay] = []
    request.node.stash[RELAYS] = relays

    def make(**kwargs: object) -> Relay:
        relay = Relay(**kwargs)  # type: ignore[arg-type]
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()
