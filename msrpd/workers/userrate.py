"""UserRates: one worker's share of `[limits] user_frame_rate` and `user_byte_rate`, the
frames and bytes a second one user may send over all its sessions, on every node of a
cluster (issue 17).

Rules:
- The rate is divided equally among the user's live sessions: this worker's buckets for the
  user gain rate * mine / total a second, `mine` its sessions whose connection is here, `total`
  the user's sessions on this node (shm/usersess.py, alive while the cmap holds them) plus
  those on the other nodes (shm/remoteusers.py, written by the cluster agent every heartbeat).
  So the user's frames over the cluster stay within the rate however its sessions are spread,
  counting nothing per frame beyond the connection's own buckets, and talking to no one.
- The shares are refreshed by the worker's tick (once a second): a session opened or ended
  elsewhere changes them within a heartbeat and a tick. Until then the user may go over by
  what the old shares give.
- A connection is charged to the first user it authenticated as (attach() when its first
  session is saved, again when it moves to another worker); every connection of that user on
  this worker shares the user's two buckets. A connection holding a share counts at least one
  session, so its rate is never 0.
- Over the rate, the connection gets what session_frame_rate gives (workers/limits.py):
  back-pressure, nothing dropped.
"""

from __future__ import annotations

from ..config import LimitsSettings
from ..shm import Cmap, RemoteUsers, UserSessions
from .ratelimit import ReadRate, TokenBucket, bucket, capacity

__all__ = ["UserRates"]


class _Share:
    __slots__ = ("conids", "frames", "octets")

    def __init__(self, frames: TokenBucket | None, octets: TokenBucket | None) -> None:
        self.frames = frames
        self.octets = octets
        self.conids: set[int] = set()
        """This worker's connections charged to the user."""


class UserRates:
    def __init__(
        self, limits: LimitsSettings, users: UserSessions, cmap: Cmap, remote: RemoteUsers | None
    ) -> None:
        self.limits = limits
        self.users = users
        self.cmap = cmap
        self.remote = remote
        self.shares: dict[str, _Share] = {}
        self.charged: dict[int, str] = {}
        """Connection id -> the user it is charged to."""

    @property
    def on(self) -> bool:
        return bool(self.limits.user_frame_rate or self.limits.user_byte_rate)

    def attach(self, conid: int, user: str, rate: ReadRate, now: float, wall: float) -> None:
        """Charge connection `conid` (its buckets `rate`) to `user`, unless it is charged to a
        user already (`now` monotonic, `wall` the Unix time)."""
        if not user or conid in self.charged:
            return
        share = self.shares.get(user)
        if share is None:
            share = self.shares[user] = self._share(now)
        share.conids.add(conid)
        self.charged[conid] = user
        rate.user_frames, rate.user_bytes = share.frames, share.octets
        self._refresh(user, share, now, wall)

    def alone(self, conid: int) -> bool:
        """Connection `conid` is charged to a user with no other connection here."""
        user = self.charged.get(conid)
        share = None if user is None else self.shares.get(user)
        return share is not None and share.conids == {conid}

    def detach(self, conid: int) -> None:
        """Connection `conid` closed or left this worker."""
        user = self.charged.pop(conid, None)
        share = None if user is None else self.shares.get(user)
        if user is None or share is None:
            return
        share.conids.discard(conid)
        if not share.conids:
            del self.shares[user]

    def tick(self, now: float, wall: float) -> None:
        """Refresh every user's share."""
        for user, share in self.shares.items():
            self._refresh(user, share, now, wall)

    def _share(self, now: float) -> _Share:
        limits = self.limits
        frames, octets = limits.user_frame_rate, limits.user_byte_rate
        return _Share(
            bucket(frames, limits.rate_burst, now), bucket(octets, limits.rate_burst, now)
        )

    def _refresh(self, user: str, share: _Share, now: float, wall: float) -> None:
        mine, here = 0, 0
        for sessid in self.users.sessions(user):
            entry = self.cmap.lookup(sessid, wall)
            if entry is not None:
                here += 1
                if entry.conid in share.conids:
                    mine += 1
        elsewhere = 0 if self.remote is None else self.remote.sessions(user, wall)
        mine = max(mine, 1)
        part = mine / max(here + elsewhere, mine)
        limits = self.limits
        for users, whole in (
            (share.frames, limits.user_frame_rate),
            (share.octets, limits.user_byte_rate),
        ):
            if users is not None:
                users.set_rate(whole * part, capacity(whole * part, limits.rate_burst), now)
