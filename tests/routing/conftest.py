"""Fixtures for the routing tests: real shm tables under a per-test prefix (tests/conftest.py),
an in-memory env, and the route tests run on both loaders of a bundled route.

Teardown unlinks every segment under the test's prefix, so a failing test leaves nothing in
/dev/shm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.hotpath import pure_requested
from msrpd.routing import RouteScript, load_route, script
from msrpd.shm import Cmap, HTable

from . import fakeenv
from .fakeenv import FakeEnv

LOADERS = ["interpreted"] if pure_requested() else ["compiled", "interpreted"]


@pytest.fixture
def htable(prefix: str, tmp_path: Path) -> Iterator[HTable]:
    h = HTable.create(prefix, tmp_path / "htable.lock", 16, 1024)
    try:
        yield h
    finally:
        h.close()
        h.unlink()


@pytest.fixture
def env(cmap: Cmap, htable: HTable) -> FakeEnv:
    return FakeEnv(cmap, htable)


@pytest.fixture(params=LOADERS)
def both_loaders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test of the bundled routes on their compiled modules and on their text exec'd
    (routing/script.py; the pure path has only the latter): the outcomes must be the same.
    Every route the test loads is checked to have run as the parameter says."""
    compiled = request.param == "compiled"
    if not compiled:
        monkeypatch.setattr(script, "compiled_route", lambda source: None)
    load = load_route

    def checked(path: Path | None, callback: str) -> RouteScript:
        loaded = load(path, callback)
        assert loaded.compiled is compiled, loaded.describe()
        return loaded

    monkeypatch.setattr(fakeenv, "load_route", checked)
    return str(request.param)
