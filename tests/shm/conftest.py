"""Shared fixture for the shm tests: a unique segment prefix per test.

Every test gets its own prefix (derived from its tmp_path); teardown unlinks whatever segments
still carry it, so a failing test leaves nothing in /dev/shm. Forked children come from the
`children` fixture (tests/conftest.py, tests/forking.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import instance_prefix, segment_names, unlink_stale


@pytest.fixture
def prefix(tmp_path: Path) -> Iterator[str]:
    p = instance_prefix(tmp_path)
    try:
        yield p
    finally:
        unlink_stale(f"{p}-")
        assert segment_names(f"{p}-") == []
