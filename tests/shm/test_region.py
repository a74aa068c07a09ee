"""Region: create, attach, header checks, unlink, stale cleanup, and no resource_tracker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from msrpd.shm import Region, ShmLayoutError, segment_names, unlink_stale
from msrpd.shm.region import HEADER_SIZE, SHM_DIR

from ..forking import Children

ROOT = Path(__file__).resolve().parents[2]


def test_create_attach_share_bytes(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 100, b"t/1")
    try:
        assert a.size == 100
        assert (SHM_DIR / f"{prefix}-r").stat().st_size == HEADER_SIZE + 100
        assert bytes(a.buf) == bytes(100)  # zero-filled
        b = Region.attach(f"{prefix}-r", "t/1", 100)
        try:
            a.buf[0:5] = b"hello"
            assert bytes(b.buf[0:5]) == b"hello"
            assert b.size == 100
        finally:
            b.close()
    finally:
        a.close()
        a.unlink()
    assert segment_names(f"{prefix}-") == []


def test_create_fails_if_it_exists(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 64, b"t/1")
    try:
        with pytest.raises(FileExistsError):
            Region.create(f"{prefix}-r", 64, b"t/1")
    finally:
        a.close()
        a.unlink()


def test_attach_checks_tag_size_and_magic(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 64, b"cmap/1")
    try:
        with pytest.raises(ShmLayoutError, match=r"layout tag b'cmap/1', expected b'cmap/2'"):
            Region.attach(f"{prefix}-r", b"cmap/2")
        with pytest.raises(ShmLayoutError, match="64 usable bytes, expected 65"):
            Region.attach(f"{prefix}-r", b"cmap/1", 65)
        Region.attach(f"{prefix}-r", b"cmap/1").close()  # size optional
        (SHM_DIR / f"{prefix}-junk").write_bytes(b"x" * 100)
        with pytest.raises(ShmLayoutError, match="not an msrpd segment"):
            Region.attach(f"{prefix}-junk", b"cmap/1")
        (SHM_DIR / f"{prefix}-short").write_bytes(b"MSRPD")
        with pytest.raises(ShmLayoutError, match="shorter than the header"):
            Region.attach(f"{prefix}-short", b"cmap/1")
    finally:
        a.close()
        a.unlink()


def test_attach_detects_truncated_segment(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 4096, b"t/1")
    try:
        with open(SHM_DIR / f"{prefix}-r", "r+b") as f:
            f.truncate(HEADER_SIZE + 100)
        with pytest.raises(ShmLayoutError, match="header says 4128 bytes, segment has 132"):
            Region.attach(f"{prefix}-r", b"t/1")
    finally:
        a.close()
        a.unlink()


def test_attach_missing_and_bad_names(prefix: str) -> None:
    with pytest.raises(FileNotFoundError):
        Region.attach(f"{prefix}-nothing", b"t/1")
    for bad in ("", "a/b", "../x", "-x", "x" * 300):
        with pytest.raises(ValueError, match="bad shared-memory name"):
            Region.create(bad, 10, b"t/1")
    for tag in (b"", b"x" * 17, b"a\0b"):
        with pytest.raises(ValueError, match="layout tag"):
            Region.create(f"{prefix}-r", 10, tag)
    with pytest.raises(ValueError, match="positive"):
        Region.create(f"{prefix}-r", 0, b"t/1")
    assert segment_names(f"{prefix}-") == []


def test_close_is_idempotent_and_buf_unusable_after(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 16, b"t/1")
    a.close()
    a.close()
    assert a.closed
    with pytest.raises(ValueError, match="closed"):
        _ = a.buf
    a.unlink()
    a.unlink()  # missing is not an error


def test_unlink_keeps_existing_mappings(prefix: str) -> None:
    a = Region.create(f"{prefix}-r", 16, b"t/1")
    b = Region.attach(f"{prefix}-r", b"t/1")
    a.unlink()
    a.buf[0] = 7
    assert b.buf[0] == 7
    a.close()
    b.close()
    assert segment_names(f"{prefix}-") == []


def test_segment_names_and_unlink_stale(prefix: str) -> None:
    regions = [Region.create(f"{prefix}-{s}", 8, b"t/1") for s in ("a", "b", "c")]
    other = Region.create(f"{prefix}x-a", 8, b"t/1")  # same text, another instance
    try:
        for r in regions:
            r.close()
        assert segment_names(f"{prefix}-") == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
        assert unlink_stale(f"{prefix}-") == [f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"]
        assert segment_names(f"{prefix}-") == []
        assert segment_names(f"{prefix}x-") == [f"{prefix}x-a"]
        with pytest.raises(ValueError, match="empty prefix"):
            segment_names("")
    finally:
        other.close()
        other.unlink()


def test_attaching_process_exit_does_not_unlink(prefix: str, children: Children) -> None:
    """The failure SharedMemory has on 3.11: the resource_tracker unlinks on any exit."""
    a = Region.create(f"{prefix}-r", 16, b"t/1")
    try:

        def child() -> None:
            r = Region.attach(f"{prefix}-r", b"t/1")
            r.buf[0] = 42
            r.close()

        for _ in range(4):
            assert children.wait(children.fork(child)) == 0
        assert segment_names(f"{prefix}-") == [f"{prefix}-r"]
        assert a.buf[0] == 42
    finally:
        a.close()
        a.unlink()


def test_no_resource_tracker_in_a_fresh_interpreter(prefix: str) -> None:
    """create/attach/exit in a new interpreter: no tracker started, nothing on stderr."""
    code = textwrap.dedent(
        f"""
        from multiprocessing import resource_tracker
        from msrpd.shm import Region
        a = Region.create("{prefix}-r", 16, b"t/1")
        b = Region.attach("{prefix}-r", b"t/1")
        b.close()
        a.close()
        assert resource_tracker._resource_tracker._fd is None, "tracker started"
        """
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert segment_names(f"{prefix}-") == [f"{prefix}-r"]  # still there: we own unlinking
    finally:
        unlink_stale(f"{prefix}-")
