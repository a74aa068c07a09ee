from __future__ import annotations

from collections.abc import Callable

import pytest

from .relay import Relay


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    """A started relay with two workers."""
    r = make_relay(children=2)
    result = r.start()
    assert result.returncode == 0, result.stderr + r.log()
    return r
