"""UserSessions: the sessions each user holds on this host, over every worker, so that
`[limits] max_sessions_per_user` holds cluster-wide (issue 14 item 3; rfc-checklist §5.5
"tokens per client").

Rules:
- Key: the digest username (UTF-8; one longer than 64 bytes by its hash); value: the
  session ids the user was granted, at most MAX_SLOTS, each at most SID_MAX bytes.
- The record is a claim list, not a count: a session is alive while the cmap holds it
  (cmap.lookup: not expired, and its connection not closed, its worker not dead — those
  remove it from the cmap). So every way a session ends (close, expiry, a worker's death,
  msrp.session_kill) releases its place without a hook here: claim() drops the ids the
  caller found dead, then adds the new one unless the user is at the limit, in one lock.
- A claim whose cmap save then fails is dead at the next claim (its id is in no cmap).
- The supervisor's sweep removes records none of whose sessions is alive.
- Record: 8 header + 64 key + 1 + 32 * 32 value = 1097, padded to 1104 bytes per slot.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from typing import Any, Final

from .keyed import KeyedTable

__all__ = ["MAX_SLOTS", "SID_MAX", "USER_MAX", "Claim", "UserSessions", "user_key"]

USER_MAX: Final = 64
SID_MAX: Final = 32
MAX_SLOTS: Final = 32
_VALUE: Final = struct.Struct(f"<B{MAX_SLOTS * SID_MAX}s")  # count, ids NUL-padded


class Claim(enum.Enum):
    GRANTED = "granted"
    AT_LIMIT = "the user holds as many sessions as allowed"
    NO_ROOM = "no room in the table"


def user_key(user: str) -> bytes:
    """The table key of `user` (RemoteUsers and the cluster share it)."""
    raw = user.encode("utf-8", "surrogateescape")
    if len(raw) <= USER_MAX:
        return raw
    # A longer name is kept as its hash: "#" never starts a short key of that length.
    return b"#" + hashlib.blake2b(raw, digest_size=(USER_MAX - 2) // 2).hexdigest().encode()


def _ids(value: bytes) -> list[bytes]:
    count, raw = _VALUE.unpack(value)
    return [raw[i * SID_MAX : (i + 1) * SID_MAX].rstrip(b"\0") for i in range(count)]


def _pack(ids: list[bytes]) -> bytes:
    return _VALUE.pack(len(ids), b"".join([i.ljust(SID_MAX, b"\0") for i in ids]))


def _unchanged(value: bytes) -> Callable[[tuple[Any, ...]], bool]:
    return lambda head: _VALUE.pack(*head) == value


class UserSessions(KeyedTable):
    """Username -> its session ids. create() in the supervisor, attach() after fork."""

    SUFFIX = "usersess"
    TAG = b"usersess/1"
    KEY_MAX = USER_MAX
    VALUE = _VALUE

    def sessions(self, user: str) -> list[str]:
        """The session ids claimed for `user`, dead ones included (lock-free)."""
        value = self.table.get(user_key(user))
        return [] if value is None else [i.decode("ascii", "replace") for i in _ids(value)]

    def claim(self, user: str, sessid: str, limit: int, alive: Callable[[str], bool]) -> Claim:
        """Give `user` session `sessid` unless it holds `limit` (1..MAX_SLOTS) live ones
        already (alive(id): the session still exists). NO_ROOM when the id is too long or the
        stripe is full: the caller refuses the AUTH rather than lose count."""
        sid = sessid.encode("ascii", "replace")
        if len(sid) > SID_MAX:
            return Claim.NO_ROOM
        at_limit = False
        dead = {i for i in self.sessions(user) if not alive(i)}  # cmap lookups, outside the lock
        dead_raw = {i.encode("ascii", "replace") for i in dead}

        def change(old: bytes | None) -> bytes | None:
            nonlocal at_limit
            ids = [] if old is None else [i for i in _ids(old) if i not in dead_raw]
            if len(ids) >= min(limit, MAX_SLOTS):
                at_limit = True
                return None
            return _pack([*ids, sid])

        if self.table.upsert(user_key(user), change):
            return Claim.GRANTED
        return Claim.AT_LIMIT if at_limit else Claim.NO_ROOM

    def live_counts(self, alive: Callable[[str], bool]) -> dict[bytes, int]:
        """User key -> how many of its sessions are alive, for the users holding one or more
        (the cluster agent publishes them every heartbeat: cluster/usage.py)."""
        counts: dict[bytes, int] = {}
        for i in range(self.n_stripes):
            for key, value in self.table.items(i):
                live = sum(1 for s in _ids(value) if alive(s.decode("ascii", "replace")))
                if live:
                    counts[key] = live
        return counts

    def sweep_stripe(self, i: int, alive: Callable[[str], bool]) -> int:
        """Remove stripe i's users none of whose sessions is alive; the count."""
        removed = 0
        for key, value in self.table.items(i):
            if any(alive(s.decode("ascii", "replace")) for s in _ids(value)):
                continue
            # Only if unchanged since the copy: a claim made meanwhile is kept.
            if self.table.delete(key, _VALUE, _unchanged(value)):
                removed += 1
        return removed
