from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .relay import Relay


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


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """A started relay with two workers."""
    r = make_relay(children=2)
    result = r.start()
    assert result.returncode == 0, result.stderr + r.log()
    return r
