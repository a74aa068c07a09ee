"""AddrTable: per source address, over every worker: its open connections and its failed
AUTHs, and whether it is banned (issue 14 item 3; rfc-checklist §3.7, §5.5).

Rules:
- Key: the address text as workers/peers.source_host gives it (IPv6 in brackets), at most
  48 bytes (an IPv6 text is at most 45 plus brackets). Two reserved keys, which no address
  text starts with, count the connections on probation ([limits] max_unauth_conns) with the
  same calls: PROBATION for the whole relay, probation_key(index) for one worker's share, so
  the supervisor gives a dead worker's share back (its connections died with it).
- Each change is one locked read-modify-write (StripedTable.upsert), so two workers counting
  the same address never lose a count; the checks (limit reached, banned) are made in the
  same lock as the increment, so no two workers both take the last place.
- open_conn counts a connection unless the address is banned or at its limit; close_conn
  (the worker, when the connection closes) and release (the supervisor, for a dead worker's
  connections, found in the registry) give it back. A full stripe admits the connection
  uncounted (open_conn says so): a table filled by many addresses must not lock everyone out.
- AUTH failures count within a window that starts at the first failure; ban_after of them
  ban the address until `banned_until`. A record whose address has no connection, no ban and
  no failure window left is removed by whoever makes it so, or by the supervisor's sweep.
- ban() sets a ban made elsewhere (the cluster agent, from Redis): it only ever lengthens one.
- Record: 8 header + 48 key + 32 value (expires, banned_until, window_start f64; conns,
  failures u32) = 88 bytes per slot.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from .keyed import KeyedTable

__all__ = ["ADDR_KEY_MAX", "PROBATION", "AddrTable", "Admission", "BanRule", "probation_key"]

ADDR_KEY_MAX: Final = 48
PROBATION: Final = "*"
_VALUE: Final = struct.Struct("<dddII")  # expires, banned_until, window_start, conns, failures
_EMPTY: Final = (0.0, 0.0, 0.0, 0, 0)


class Admission(enum.Enum):
    COUNTED = "counted"
    UNCOUNTED = "uncounted (table full)"
    BANNED = "banned"
    FULL = "too many connections from this address"


class BanRule:
    """ban_after failures within window seconds ban for ban_time seconds (0: never)."""

    __slots__ = ("after", "time", "window")

    def __init__(self, after: int, window: float, ban_time: float) -> None:
        self.after = after
        self.window = window
        self.time = ban_time


def probation_key(index: int) -> str:
    """The key counting worker `index`'s connections on probation."""
    return f"{PROBATION}{index}"


def _enc(addr: str) -> bytes:
    return addr.encode("utf-8", "surrogateescape")


def _pack(banned_until: float, window_end: float, start: float, conns: int, fails: int) -> bytes:
    # expires: when the record means nothing any more, unless it still counts connections.
    return _VALUE.pack(max(banned_until, window_end), banned_until, start, conns, fails)


def _idle(head: tuple[float, float, float, int, int], now: float) -> bool:
    expires, _, _, conns, _ = head
    return conns == 0 and expires < now


class AddrTable(KeyedTable):
    """Source address -> connections and AUTH failures. create() in the supervisor, attach()
    after fork."""

    SUFFIX = "addrs"
    TAG = b"addrs/1"
    KEY_MAX = ADDR_KEY_MAX
    VALUE = _VALUE

    def _head(self, addr: str) -> tuple[float, float, float, int, int]:
        value = self.table.get(_enc(addr))
        return _EMPTY if value is None else _VALUE.unpack(value)

    def banned(self, addr: str, now: float) -> bool:
        """The address is banned at `now` (lock-free)."""
        return self._head(addr)[1] > now

    def conns(self, addr: str) -> int:
        """Connections counted for the address (lock-free)."""
        return self._head(addr)[3]

    def open_conn(self, addr: str, limit: int, now: float) -> Admission:
        """Count a new connection from `addr`, unless it is banned or already has `limit`
        (0: no limit)."""
        verdict = Admission.COUNTED

        def change(old: bytes | None) -> bytes | None:
            nonlocal verdict
            expires, until, start, conns, fails = _EMPTY if old is None else _VALUE.unpack(old)
            if until > now:
                verdict = Admission.BANNED
                return None
            if limit and conns >= limit:
                verdict = Admission.FULL
                return None
            return _VALUE.pack(expires, until, start, conns + 1, fails)

        if self.table.upsert(_enc(addr), change):
            return Admission.COUNTED
        return Admission.UNCOUNTED if verdict is Admission.COUNTED else verdict

    def close_conn(self, addr: str, now: float) -> None:
        """A counted connection from `addr` closed."""
        self.release(addr, 1, now)

    def release(self, addr: str, n: int, now: float) -> None:
        """`n` counted connections from `addr` are gone (the supervisor: a dead worker's)."""
        key = _enc(addr)

        def change(old: bytes | None) -> bytes | None:
            if old is None:
                return None
            expires, until, start, conns, fails = _VALUE.unpack(old)
            return _VALUE.pack(expires, until, start, max(0, conns - n), fails)

        if self.table.update(key, change):
            self.table.delete(key, _VALUE, lambda head: _idle(head, now))

    def auth_failed(self, addr: str, rule: BanRule, now: float) -> bool:
        """Count a failed AUTH from `addr`; True when this one bans it."""
        if not rule.after:
            return False
        banned = False

        def change(old: bytes | None) -> bytes | None:
            nonlocal banned
            _, until, start, conns, fails = _EMPTY if old is None else _VALUE.unpack(old)
            if start + rule.window < now:
                start, fails = now, 0  # the window starts at the first failure
            fails += 1
            if fails >= rule.after and until <= now:
                until, fails, banned = now + rule.time, 0, True
            return _pack(until, start + rule.window, start, conns, fails)

        self.table.upsert(_enc(addr), change)
        return banned

    def ban(self, addr: str, until: float) -> bool:
        """Ban `addr` until `until` (a ban the cluster made, issue 17): False when it is
        banned that long already, or its stripe is full."""

        def change(old: bytes | None) -> bytes | None:
            expires, banned_until, start, conns, fails = (
                _EMPTY if old is None else _VALUE.unpack(old)
            )
            if banned_until >= until:
                return None
            return _VALUE.pack(max(expires, until), until, start, conns, fails)

        return self.table.upsert(_enc(addr), change)

    def sweep_stripe(self, i: int, now: float) -> int:
        """Remove stripe i's records with no connection and nothing left to remember."""
        return self.table.remove_where(i, _VALUE, lambda head: _idle(head, now))
