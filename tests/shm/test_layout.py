"""ShmLayout: instance prefixes, creating and attaching every region, stale cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from msrpd.shm import ShmLayout, ShmLayoutError, WorkerState, instance_prefix, segment_names
from msrpd.shm.region import HEADER_SIZE, SHM_DIR

from ..forking import Children


def layout(prefix: str, tmp_path: Path, **kw: int) -> ShmLayout:
    numbers = {"cmap_stripes": 16, "cmap_capacity": 1000, "registry_capacity": 256}
    numbers |= {"process_slots": 8} | kw
    return ShmLayout(prefix, tmp_path / "msrpd.lock", **numbers)


def test_instance_prefix_is_stable_and_distinct(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert instance_prefix(a) == instance_prefix(a / ".." / "a")  # resolved path
    assert instance_prefix(a) != instance_prefix(b)
    assert instance_prefix(a).startswith("msrpd-") and len(instance_prefix(a)) == 16
    (tmp_path / "link").symlink_to(a)
    assert instance_prefix(tmp_path / "link") == instance_prefix(a)


def test_create_attach_and_unlink_all(prefix: str, tmp_path: Path, children: Children) -> None:
    lay = layout(prefix, tmp_path)
    specs = lay.regions()
    assert [s.name for s in specs] == [
        f"{prefix}-cmap",
        f"{prefix}-registry",
        f"{prefix}-heartbeats",
        f"{prefix}-stats",
        f"{prefix}-htable",
        f"{prefix}-addrs",
        f"{prefix}-usersess",
        f"{prefix}-remoteusers",
    ]
    assert [s.record_size for s in specs] == [544, 112, 40, 496, 416, 88, 1104, 88]
    shm = lay.create_all()
    try:
        assert segment_names(f"{prefix}-") == sorted(s.name for s in specs)
        for s in specs:
            assert (SHM_DIR / s.name).stat().st_size == HEADER_SIZE + s.size
        with pytest.raises(FileExistsError):
            lay.create_all()
        assert segment_names(f"{prefix}-") == sorted(s.name for s in specs)  # untouched

        def worker() -> None:
            mine = lay.attach_all()
            assert mine.registry.register("tcp:192.0.2.1:5", 9)
            mine.heartbeats.beat(3, WorkerState.RUNNING, 1)
            mine.close()

        assert children.wait(children.fork(worker)) == 0
        assert shm.registry.lookup("tcp:192.0.2.1:5") == 9
        assert shm.heartbeats.read(3).conns == 1
        assert (tmp_path / "msrpd.lock.cmap").exists()
        assert (tmp_path / "msrpd.lock.registry").exists()
        with pytest.raises(ShmLayoutError):
            layout(prefix, tmp_path, process_slots=9).attach_all()
    finally:
        shm.close()
        shm.unlink()
    assert segment_names(f"{prefix}-") == []


def test_failed_create_removes_what_it_made(prefix: str, tmp_path: Path) -> None:
    lay = layout(prefix, tmp_path)
    (SHM_DIR / f"{prefix}-heartbeats").write_bytes(b"left by someone")
    with pytest.raises(FileExistsError):
        lay.create_all()
    assert segment_names(f"{prefix}-") == [f"{prefix}-heartbeats"]
    assert lay.unlink_stale() == [f"{prefix}-heartbeats"]
    lay.create_all().close()
    assert len(lay.unlink_stale()) == 8


def test_registry_stripes_default_to_cmap_stripes(prefix: str, tmp_path: Path) -> None:
    shm = layout(prefix, tmp_path, registry_stripes=4).create_all()
    try:
        assert (shm.cmap.n_stripes, shm.registry.n_stripes) == (16, 4)
        assert shm.registry.capacity == 256
    finally:
        shm.close()
        shm.unlink()
    shm = layout(prefix, tmp_path).create_all()
    try:
        assert shm.registry.n_stripes == 16
        assert shm.cmap.capacity == 1008  # 1000 rounded up to 16 stripes of 63
    finally:
        shm.close()
        shm.unlink()
