"""KeyedTable: what Cmap and Registry share on top of a StripedTable.

Rules: a subclass names its region suffix, layout tag, key limit and value struct as class
constants (immutable); this base turns (prefix, lockfile, n_stripes, capacity) into a geometry
and a region name, so create() in the supervisor and attach() in a worker agree by
construction. Each table has its own lock file: two StripeLocks on one file in one process
would drop each other's locks on close (see locks.py).
"""

from __future__ import annotations

import os
import struct
from typing import ClassVar, Self

from .stripes import TableGeometry
from .table import StripedTable

__all__ = ["KeyedTable"]


class KeyedTable:
    """Base of the shared tables; not used directly."""

    SUFFIX: ClassVar[str]
    TAG: ClassVar[bytes]
    KEY_MAX: ClassVar[int]
    VALUE: ClassVar[struct.Struct]

    def __init__(self, table: StripedTable) -> None:
        # Use create() or attach().
        self.table = table

    @classmethod
    def geometry(cls, n_stripes: int, capacity: int) -> TableGeometry:
        """The table shape for these config numbers (capacity rounded up per stripe)."""
        return TableGeometry.for_capacity(n_stripes, capacity, cls.KEY_MAX, cls.VALUE.size)

    @classmethod
    def region_name(cls, prefix: str) -> str:
        return f"{prefix}-{cls.SUFFIX}"

    @classmethod
    def create(
        cls, prefix: str, lockfile: str | os.PathLike[str], n_stripes: int, capacity: int
    ) -> Self:
        """Create the region (supervisor, before fork). Raises FileExistsError if it exists."""
        geometry = cls.geometry(n_stripes, capacity)
        return cls(StripedTable.create(cls.region_name(prefix), lockfile, geometry, cls.TAG))

    @classmethod
    def attach(
        cls, prefix: str, lockfile: str | os.PathLike[str], n_stripes: int, capacity: int
    ) -> Self:
        """Attach to the region (worker, after fork), with the numbers given to create().

        Raises:
            FileNotFoundError: no such region.
            ShmLayoutError: it was made by another version or with other numbers.
        """
        geometry = cls.geometry(n_stripes, capacity)
        return cls(StripedTable.attach(cls.region_name(prefix), lockfile, geometry, cls.TAG))

    @property
    def n_stripes(self) -> int:
        return self.table.n_stripes

    @property
    def capacity(self) -> int:
        """Slots in the table: the requested capacity rounded up to a multiple of n_stripes."""
        return self.table.capacity

    def count(self) -> int:
        """Entries stored (a lock-free snapshot, see StripedTable.count)."""
        return self.table.count()

    def close(self) -> None:
        """Unmap and close the lock file, in this process only."""
        self.table.close()

    def unlink(self) -> None:
        """Remove the region's name (supervisor, at stop)."""
        self.table.unlink()
