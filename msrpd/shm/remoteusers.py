"""RemoteUsers: the sessions each user holds on the other nodes of the cluster (issue 17), so
that `[limits] max_sessions_per_user` and the user rates hold over the cluster while no
worker talks to Redis.

Rules:
- One writer, the node's cluster agent (cluster/usage.py), every heartbeat; the workers only
  read it, lock-free, at an AUTH (usersess.py claims) and at their rate tick (user rates).
- Key: the user as UserSessions keys it (usersess.user_key); value: (expires, sessions). An
  entry read after its expiry counts 0: an agent that stopped writing (its node's end, a hung
  agent) leaves the workers counting this node alone, as with Redis down.
- replace() makes the table exactly the given counts: users not given are removed. A user
  whose stripe is full is not stored (it counts this node alone): replace() returns how many,
  for the agent to log and show (cluster_users_left_out).
- Record: 8 header + 64 key + 16 value (expires f64, sessions u32, pad) = 88 bytes per slot.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

from .keyed import KeyedTable
from .usersess import USER_MAX, user_key

__all__ = ["RemoteUsers"]

_VALUE: Final = struct.Struct("<dI4x")
_HEAD: Final = struct.Struct("<d")


class RemoteUsers(KeyedTable):
    """User -> its sessions on the other nodes. create() in the supervisor, attach() after
    fork."""

    SUFFIX = "remoteusers"
    TAG = b"remoteusers/1"
    KEY_MAX = USER_MAX
    VALUE = _VALUE

    def sessions(self, user: str, now: float) -> int:
        """`user`'s sessions on the other nodes (0 when unknown or stale; lock-free)."""
        value = self.table.get(user_key(user))
        if value is None:
            return 0
        expires, count = _VALUE.unpack(value)
        return int(count) if expires >= now else 0

    def replace(self, counts: Mapping[bytes, int], expires: float) -> int:
        """Make the table hold exactly `counts` (user key -> sessions elsewhere), valid until
        `expires`; the number of users left out for want of room."""
        for i in range(self.n_stripes):
            for key, _ in self.table.items(i):
                if key not in counts:
                    self.table.delete(key)
        full = 0
        for key, count in counts.items():
            if not self.table.put(key, _VALUE.pack(expires, min(count, 0xFFFFFFFF))):
                full += 1
        return full

    def clear(self) -> int:
        """Remove every entry (Redis is down: each node counts its own); how many."""
        return sum(
            self.table.remove_where(i, _HEAD, lambda head: True) for i in range(self.n_stripes)
        )
