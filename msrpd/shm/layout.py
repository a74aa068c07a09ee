"""ShmLayout: every shared region of one msrpd instance, declared in one place.

Rules (style rule 15, nginx's shm zones):
- Region names are "<prefix>-<suffix>"; the prefix comes from instance_prefix(run_dir), so two
  instances with different run_dirs never share or unlink each other's segments.
- regions() lists name, layout tag, record size and region size for the config numbers. On
  reload the supervisor keeps a region whose entry is unchanged (attach() checks tag and size)
  and builds a new one otherwise.
- Each striped table has its own lock file, "<lockfile>.<suffix>", because a process must hold
  exactly one descriptor per lock file (locks.py). Lock files are left in place on unlink():
  removing one while any process still has it open would split the lock in two.
- The registry uses cmap_stripes stripes unless registry_stripes is given. The htable uses
  htable_stripes, or else cmap_stripes capped so each stripe keeps at least 64 slots (a stripe
  of a few slots fills up long before the table does).
- The htable's table declarations (name -> autoexpire) are not part of the region's layout:
  create and attach must be given the same ones, and changing them needs no new region.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from .addrs import AddrTable
from .cmap import Cmap
from .heartbeat import HEARTBEAT_RECORD, Heartbeats
from .htstore import DEFAULT_TABLES, HTable
from .region import unlink_stale
from .registry import Registry
from .remoteusers import RemoteUsers
from .stats import STATS_RECORD, Stats
from .usersess import UserSessions

__all__ = ["RegionSpec", "ShmLayout", "ShmSet", "instance_prefix"]

_HTABLE_MIN_SLOTS: Final = 64  # per stripe, when htable_stripes is not given


class _Region(Protocol):
    def close(self) -> None: ...
    def unlink(self) -> None: ...


def instance_prefix(run_dir: Path) -> str:
    """ "msrpd-" + 10 hex digits of a hash of the resolved run_dir: stable across restarts."""
    digest = hashlib.blake2b(str(run_dir.resolve()).encode(), digest_size=5).hexdigest()
    return f"msrpd-{digest}"


@dataclass(frozen=True, slots=True)
class RegionSpec:
    name: str
    tag: bytes
    record_size: int
    """Bytes per record (per slot for tables, per process for heartbeats and stats)."""
    size: int
    """Usable bytes of the region (the 32-byte region header comes on top)."""


@dataclass(frozen=True, slots=True)
class ShmSet:
    """The regions one process has mapped."""

    cmap: Cmap
    registry: Registry
    heartbeats: Heartbeats
    stats: Stats
    htable: HTable
    addrs: AddrTable
    """Per source address: connections, AUTH failures, bans ([limits])."""
    users: UserSessions
    """Per user: the sessions it holds ([limits] max_sessions_per_user)."""
    remote_users: RemoteUsers
    """Per user: the sessions it holds on the other nodes (the cluster agent writes it)."""

    def _regions(self) -> tuple[_Region, ...]:
        return (
            self.cmap,
            self.registry,
            self.heartbeats,
            self.stats,
            self.htable,
            self.addrs,
            self.users,
            self.remote_users,
        )

    def close(self) -> None:
        """Unmap everything and close the lock files, in this process."""
        for region in self._regions():
            region.close()

    def unlink(self) -> None:
        """Remove every region name (supervisor, at stop). Mappings stay valid until closed."""
        for region in self._regions():
            region.unlink()


@dataclass(frozen=True, slots=True)
class ShmLayout:
    """The shared memory for one instance, from config numbers."""

    prefix: str
    lockfile: Path
    cmap_stripes: int
    """1 << cmap_size (Kamailio's modparam), 1..65536."""
    cmap_capacity: int
    registry_capacity: int
    process_slots: int
    """Heartbeat and stats slots: every worker of every live generation needs one."""
    registry_stripes: int = 0
    htable_capacity: int = 4096
    """Items of all htables together (rounded up to a multiple of the stripes)."""
    htable_tables: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TABLES, hash=False)
    """Declared htables: name -> autoexpire seconds (Kamailio's `htable` modparam)."""
    htable_stripes: int = 0
    addrs_capacity: int = 4096
    """Source addresses with open connections or AUTH failures remembered at once."""
    users_capacity: int = 1024
    """Users holding sessions at once (1104 bytes each), and users holding sessions on the
    other nodes at once (88 bytes each)."""

    def lock_path(self, suffix: str) -> Path:
        return Path(f"{self.lockfile}.{suffix}")

    def _registry_stripes(self) -> int:
        return self.registry_stripes or self.cmap_stripes

    def _htable_stripes(self) -> int:
        if self.htable_stripes:
            return self.htable_stripes
        most = max(1, self.htable_capacity // _HTABLE_MIN_SLOTS)
        return min(self.cmap_stripes, 1 << (most.bit_length() - 1))

    def _small_stripes(self) -> int:
        """The limits tables' stripes: few (each stripe keeps 64 slots or more), since they
        change only when a connection opens or closes or an AUTH is checked."""
        return max(1, min(self.cmap_stripes, 16))

    def regions(self) -> tuple[RegionSpec, ...]:
        """Name, tag, record size and size of each region for these numbers."""
        cmap = Cmap.geometry(self.cmap_stripes, self.cmap_capacity)
        registry = Registry.geometry(self._registry_stripes(), self.registry_capacity)
        htable = HTable.geometry(self._htable_stripes(), self.htable_capacity)
        addrs = AddrTable.geometry(self._small_stripes(), self.addrs_capacity)
        users = UserSessions.geometry(self._small_stripes(), self.users_capacity)
        remote = RemoteUsers.geometry(self._small_stripes(), self.users_capacity)
        p, n = self.prefix, self.process_slots
        return (
            RegionSpec(Cmap.region_name(p), Cmap.TAG, cmap.record_size, cmap.region_size),
            RegionSpec(
                Registry.region_name(p), Registry.TAG, registry.record_size, registry.region_size
            ),
            RegionSpec(
                Heartbeats.region_name(p),
                Heartbeats.TAG,
                HEARTBEAT_RECORD,
                Heartbeats.region_size(n),
            ),
            RegionSpec(Stats.region_name(p), Stats.TAG, STATS_RECORD, Stats.region_size(n)),
            RegionSpec(HTable.region_name(p), HTable.TAG, htable.record_size, htable.region_size),
            RegionSpec(
                AddrTable.region_name(p), AddrTable.TAG, addrs.record_size, addrs.region_size
            ),
            RegionSpec(
                UserSessions.region_name(p), UserSessions.TAG, users.record_size, users.region_size
            ),
            RegionSpec(
                RemoteUsers.region_name(p), RemoteUsers.TAG, remote.record_size, remote.region_size
            ),
        )

    def create_all(self) -> ShmSet:
        """Create every region (supervisor, before fork); on failure remove what was made.

        Raises:
            FileExistsError: a region exists (unlink_stale() removes a crashed run's).
        """
        return self._open(create=True)

    def attach_all(self) -> ShmSet:
        """Attach every region (worker, after fork); on failure unmap what was attached.

        Raises:
            FileNotFoundError, ShmLayoutError: see Region.attach.
        """
        return self._open(create=False)

    def unlink_stale(self) -> list[str]:
        """Unlink this instance's segments left by a crashed run; their names."""
        return unlink_stale(f"{self.prefix}-")

    def _open(self, *, create: bool) -> ShmSet:
        p, slots = self.prefix, self.process_slots
        opened: list[_Region] = []
        try:
            cmap = (Cmap.create if create else Cmap.attach)(
                p, self.lock_path(Cmap.SUFFIX), self.cmap_stripes, self.cmap_capacity
            )
            opened.append(cmap)
            registry = (Registry.create if create else Registry.attach)(
                p, self.lock_path(Registry.SUFFIX), self._registry_stripes(), self.registry_capacity
            )
            opened.append(registry)
            heartbeats = (Heartbeats.create if create else Heartbeats.attach)(p, slots)
            opened.append(heartbeats)
            stats = (Stats.create if create else Stats.attach)(p, slots)
            opened.append(stats)
            htable = (HTable.create if create else HTable.attach)(
                p,
                self.lock_path(HTable.SUFFIX),
                self._htable_stripes(),
                self.htable_capacity,
                self.htable_tables,
            )
            opened.append(htable)
            addrs = (AddrTable.create if create else AddrTable.attach)(
                p, self.lock_path(AddrTable.SUFFIX), self._small_stripes(), self.addrs_capacity
            )
            opened.append(addrs)
            users = (UserSessions.create if create else UserSessions.attach)(
                p, self.lock_path(UserSessions.SUFFIX), self._small_stripes(), self.users_capacity
            )
            opened.append(users)
            remote_users = (RemoteUsers.create if create else RemoteUsers.attach)(
                p, self.lock_path(RemoteUsers.SUFFIX), self._small_stripes(), self.users_capacity
            )
        except BaseException:
            for region in opened:
                region.close()
                if create:
                    region.unlink()
            raise
        return ShmSet(cmap, registry, heartbeats, stats, htable, addrs, users, remote_users)
