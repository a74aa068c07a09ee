"""Fixtures the worker tests share: `tables`, the [limits] tables in real shared memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import AddrTable, Cmap, UserSessions


@pytest.fixture
def tables(prefix: str, tmp_path: Path) -> Iterator[tuple[AddrTable, UserSessions, Cmap]]:
    made = (
        AddrTable.create(prefix, tmp_path / "a.lock", 2, 128),
        UserSessions.create(prefix, tmp_path / "u.lock", 2, 64),
        Cmap.create(prefix, tmp_path / "c.lock", 2, 64),
    )
    try:
        yield made
    finally:
        for table in made:
            table.close()
            table.unlink()
