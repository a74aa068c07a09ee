"""Fixtures for the routing tests: real shm tables under a per-test prefix, an in-memory env.

Teardown unlinks every segment under the test's prefix, so a failing test leaves nothing in
/dev/shm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import Cmap, HTable, instance_prefix, segment_names, unlink_stale

from .fakeenv import FakeEnv


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
