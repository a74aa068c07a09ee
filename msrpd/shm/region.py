"""Named shared-memory regions with a self-describing header.

Strategy: a region is a POSIX shared-memory segment (Linux: a file in /dev/shm) that starts with
a 32-byte header: magic b"MSRPD", the caller's layout tag (b"cmap/1"), and the total segment
size. attach() refuses a segment whose header does not match what the caller expects, so a
worker never reads a table laid out by another version (nginx's shm zone tag, style rule 15).

Rules:
- The segment is opened with os.open + mmap, the same calls shm_open(3) makes, and NOT with
  multiprocessing.shared_memory.SharedMemory: on Python 3.11 SharedMemory registers every
  create *and* attach with the resource_tracker, which then unlinks the segment when the first
  attaching process exits and warns about "leaked" segments. Unregistering right after the
  constructor is not enough: the tracker keeps a *set* of names shared by every forked process,
  so concurrent attach/unregister pairs race (measured: 42 KeyError tracebacks from the tracker
  for 4 forked processes x 200 attaches), and the first register spawns a tracker process. The
  supervisor owns unlinking, so nothing here registers anything.
- The mapping is MAP_SHARED; the file descriptor is closed right after mmap.
- Memory is committed at start, not on first touch: create() reserves the whole segment with
  posix_fallocate (a full /dev/shm fails the start with ENOSPC, instead of a SIGBUS in a worker
  when a table fills up later), and every mapping is MAP_POPULATE, so each process's page
  tables hold the tables from the start: no page faults on the hot path, and RSS does not grow
  with connections as table pages are first touched (issue 7).
- Names are plain file names ("msrpd-<key>-cmap"); no "/".
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from pathlib import Path
from typing import Final

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "SHM_DIR",
    "Region",
    "ShmLayoutError",
    "segment_names",
    "unlink_stale",
]

SHM_DIR: Final = Path("/dev/shm")
MAGIC: Final = b"MSRPD"
HEADER_SIZE: Final = 32
_HEADER: Final = struct.Struct("<8s16sQ")  # magic (NUL padded), tag (NUL padded), total size
_TAG_MAX: Final = 16
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class ShmLayoutError(Exception):
    """A shared-memory segment or table does not have the layout the caller expects."""


def _check_name(name: str) -> Path:
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"bad shared-memory name {name!r}: use letters, digits, '.', '_', '-'")
    return SHM_DIR / name


def _tag_bytes(tag: bytes | str) -> bytes:
    raw = tag.encode("ascii") if isinstance(tag, str) else tag
    if not 0 < len(raw) <= _TAG_MAX or b"\0" in raw:
        raise ValueError(f"layout tag must be 1..{_TAG_MAX} bytes without NUL, got {raw!r}")
    return raw


class Region:
    """One mapped segment. `buf` is the memory after the 32-byte header."""

    __slots__ = ("_buf", "_map", "_view", "name", "size", "tag")

    def __init__(self, name: str, tag: bytes, mapping: mmap.mmap) -> None:
        # Use create() or attach(); this only wraps a mapping whose header is checked.
        self.name = name
        self.tag = tag
        self.size = len(mapping) - HEADER_SIZE
        self._map: mmap.mmap | None = mapping
        self._view = memoryview(mapping)
        self._buf = self._view[HEADER_SIZE:]

    @classmethod
    def create(cls, name: str, size: int, tag: bytes | str) -> Region:
        """Create a zero-filled segment with `size` usable bytes.

        Raises:
            FileExistsError: a segment with this name exists (unlink_stale() first).
            ValueError: bad name, tag or size.
        """
        path, raw_tag = _check_name(name), _tag_bytes(tag)
        if size <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        total = HEADER_SIZE + size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, total)
            os.posix_fallocate(fd, 0, total)
            mapping = _map(fd, total)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        _HEADER.pack_into(mapping, 0, MAGIC, raw_tag, total)
        return cls(name, raw_tag, mapping)

    @classmethod
    def attach(cls, name: str, tag: bytes | str, size: int | None = None) -> Region:
        """Map an existing segment, checking magic, tag and size.

        Args:
            size: when given, the usable size the caller expects.
        Raises:
            FileNotFoundError: no such segment.
            ShmLayoutError: the header does not match (another version or geometry).
        """
        path, raw_tag = _check_name(name), _tag_bytes(tag)
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            actual = os.fstat(fd).st_size
            if actual < HEADER_SIZE:
                raise ShmLayoutError(f"{name}: {actual} bytes, shorter than the header")
            mapping = _map(fd, actual)
        finally:
            os.close(fd)
        try:
            _check_header(name, mapping, raw_tag, size)
        except ShmLayoutError:
            mapping.close()
            raise
        return cls(name, raw_tag, mapping)

    @property
    def buf(self) -> memoryview:
        if self._map is None:
            raise ValueError(f"region {self.name} is closed")
        return self._buf

    @property
    def mapping(self) -> mmap.mmap:
        """The whole segment, header included (`buf` starts at HEADER_SIZE): slicing it makes
        bytes in one copy, where a slice of `buf` is first a memoryview."""
        if self._map is None:
            raise ValueError(f"region {self.name} is closed")
        return self._map

    @property
    def closed(self) -> bool:
        return self._map is None

    def close(self) -> None:
        """Unmap (idempotent). Fails with BufferError while a caller still holds a view."""
        if self._map is None:
            return
        self._buf.release()
        self._view.release()
        self._map.close()
        self._map = None

    def unlink(self) -> None:
        """Remove the segment name; mappings stay valid until closed. Missing is not an error."""
        _check_name(self.name).unlink(missing_ok=True)


def _map(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)


def _check_header(name: str, mapping: mmap.mmap, tag: bytes, size: int | None) -> None:
    magic, found_tag, total = _HEADER.unpack_from(mapping, 0)
    if magic.rstrip(b"\0") != MAGIC:
        raise ShmLayoutError(f"{name}: not an msrpd segment (magic {magic!r})")
    found_tag = found_tag.rstrip(b"\0")
    if found_tag != tag:
        raise ShmLayoutError(f"{name}: layout tag {found_tag!r}, expected {tag!r}")
    if total != len(mapping):
        raise ShmLayoutError(f"{name}: header says {total} bytes, segment has {len(mapping)}")
    if size is not None and total != HEADER_SIZE + size:
        raise ShmLayoutError(f"{name}: {total - HEADER_SIZE} usable bytes, expected {size}")


def segment_names(prefix: str) -> list[str]:
    """Sorted names of the segments in /dev/shm that start with `prefix`."""
    if not prefix:
        raise ValueError("an empty prefix would match every segment on the machine")
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def unlink_stale(prefix: str) -> list[str]:
    """Unlink every segment starting with `prefix` (left by a crashed run); return their names.

    Only for the supervisor at start, before any worker of this instance exists.
    """
    names = segment_names(prefix)
    for name in names:
        (SHM_DIR / name).unlink(missing_ok=True)
    return names
