"""Shared memory of one msrpd instance: cmap, connection registry, heartbeats, stats, htable,
and the limits' tables (per address, per user, per user on the other nodes).

Strategy: the supervisor creates every region from config numbers (ShmLayout.create_all) before
forking; each worker attaches after fork (attach_all). Tables are fixed-size, lock-striped and
hold no pointers; their locks are fcntl byte-range locks, so a worker killed inside a critical
section never blocks the others, and the next user repairs what it left half-written.
Heartbeats and stats have one writer per slot and lock-free readers (seqlocks).
"""

from .addrs import ADDR_KEY_MAX, PROBATION, AddrTable, Admission, BanRule, probation_key
from .cmap import ADDR_MAX, PEER_MAX, SESSID_MAX, SOCK_MAX, Cmap, CmapEntry
from .heartbeat import HeartbeatRecord, Heartbeats, WorkerState
from .htstore import DEFAULT_TABLES, HT_KEY_MAX, HT_VALUE_MAX, NONCE_TABLE, HTable, HtValue
from .layout import RegionSpec, ShmLayout, ShmSet, instance_prefix
from .locks import StripeLocks
from .region import Region, ShmLayoutError, segment_names, unlink_stale
from .registry import REGISTRY_ADDR_MAX, Registry
from .remoteusers import RemoteUsers
from .stats import COUNTERS, GAUGES, Counter, Stats, StatsCounters
from .stripes import TableGeometry
from .table import StripedTable, key_hash
from .usersess import Claim, UserSessions

__all__ = [
    "ADDR_KEY_MAX",
    "ADDR_MAX",
    "COUNTERS",
    "DEFAULT_TABLES",
    "GAUGES",
    "HT_KEY_MAX",
    "HT_VALUE_MAX",
    "NONCE_TABLE",
    "PEER_MAX",
    "PROBATION",
    "REGISTRY_ADDR_MAX",
    "SESSID_MAX",
    "SOCK_MAX",
    "AddrTable",
    "Admission",
    "BanRule",
    "Claim",
    "Cmap",
    "CmapEntry",
    "Counter",
    "HTable",
    "HeartbeatRecord",
    "Heartbeats",
    "HtValue",
    "Region",
    "RegionSpec",
    "Registry",
    "RemoteUsers",
    "ShmLayout",
    "ShmLayoutError",
    "ShmSet",
    "Stats",
    "StatsCounters",
    "StripeLocks",
    "StripedTable",
    "TableGeometry",
    "UserSessions",
    "WorkerState",
    "instance_prefix",
    "key_hash",
    "probation_key",
    "segment_names",
    "unlink_stale",
]
