"""Fixtures every test directory shares.

`prefix` gives each test its own shared-memory segment prefix (derived from its tmp_path);
teardown unlinks whatever segments still carry it, so a failing test leaves nothing in
/dev/shm. `cmap` is a real connection map under that prefix. `make_relay` builds real msrpd
instances (tests/integration/relay.py) and stops every one after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msrpd.shm import Cmap, instance_prefix, segment_names, unlink_stale

from .forking import Children
from .integration.relay import Relay


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


@pytest.fixture
def make_relay() -> Iterator[Callable[..., Relay]]:
    """Build Relay objects; every one is stopped and cleaned after the test."""
    relays: list[Relay] = []

    def make(**kwargs: object) -> Relay:
        relay = Relay(**kwargs)  # type: ignore[arg-type]
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        relay.stop()
