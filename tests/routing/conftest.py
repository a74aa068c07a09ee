"""Fixtures for the routing tests: real shm tables under a per-test prefix (tests/conftest.py),
an in-memory env.

Teardown unlinks every segment under the test's prefix, so a failing test leaves nothing in
/dev/shm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import Cmap, HTable

from .fakeenv import FakeEnv


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
