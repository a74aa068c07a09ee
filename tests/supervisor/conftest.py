"""Real shared memory for the supervisor's pieces, in a private short run_dir."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import ShmLayout, ShmSet, instance_prefix, segment_names, unlink_stale


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="msup-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shm(run_dir: Path) -> Iterator[ShmSet]:
    layout = ShmLayout(
        prefix=instance_prefix(run_dir),
        lockfile=run_dir / "cmap.lock",
        cmap_stripes=4,
        cmap_capacity=64,
        registry_capacity=64,
        process_slots=8,
    )
    shm = layout.create_all()
    try:
        yield shm
    finally:
        shm.close()
        shm.unlink()
        unlink_stale(f"{layout.prefix}-")
        assert segment_names(f"{layout.prefix}-") == []
