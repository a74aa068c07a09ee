"""HTable: Kamailio's htable (named tables of str/int items with per-item expiry) in shm.

Rules (Kamailio's htable module, ht_api.c; style rules 15-17):
- One region holds every table. The table key is the table name, a NUL, then the item key
  (UTF-8, surrogateescape so no str raises), at most KEY_MAX = 128 bytes in all; a longer key
  is refused like a full stripe (set False, get None), never truncated.
- Tables are declared when the region is created or attached: name -> autoexpire seconds, as
  `modparam("htable", "htable", "msrp=>size=8;autoexpire=3600;")` declares them. Naming an
  undeclared table raises KeyError (Kamailio refuses such a config at startup).
- set(): `expires_in` None means the table's autoexpire; a value <= 0 means never (stored as 0).
  Replacing an item restarts its expiry, as Kamailio's default updateexpire=1 does.
- An item whose expiry is earlier than `now` is never returned or dumped, even before the sweep
  removes it (expiry == now is still valid, as `it->expire < now` in ht_api.c). Per-item expiry
  works on every table; Kamailio ignores $shtex on a table without autoexpire.
- Values: str up to VALUE_MAX = 256 bytes of UTF-8, or an int that fits in 64 bits (Kamailio's
  `long`). Anything longer or wider makes set return False: nothing is truncated.
- expire() is $shtex(t=>k) = seconds: now + seconds, or never when seconds <= 0, changed in
  place under the stripe lock. On a missing or expired item it returns False (Kamailio silently
  does nothing).
- A full stripe: set removes that stripe's expired items (one more lock round) and tries once
  more, so dead items never block a live one; a stripe full of live items refuses (False).
- sweep_stripe() is the supervisor's timer (style rule 17; Kamailio's ht_timer).
- Record: 8 header + 128 key + 280 value (expires f64, int i64, kind u8, str length u16, pad,
  256 str bytes) = 416 bytes per slot.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Self

from .keyed import KeyedTable
from .table import StripedTable

__all__ = ["DEFAULT_TABLES", "HT_KEY_MAX", "HT_VALUE_MAX", "NONCE_TABLE", "HTable", "HtValue"]

HtValue = str | int

HT_KEY_MAX: Final = 128
HT_VALUE_MAX: Final = 256
NONCE_TABLE: Final = "_nonce"
"""Digest nonce counts seen (routing/auth.py), kept as long as a nonce is valid (300 s)."""
DEFAULT_TABLES: Final[Mapping[str, float]] = MappingProxyType({"msrp": 3600.0, NONCE_TABLE: 300.0})
"""The htable example's `msrp=>size=8;autoexpire=3600;` (oracle/kamailio-htable.cfg)."""

_VALUE: Final = struct.Struct(f"<dqBxH4x{HT_VALUE_MAX}s")  # expires, int, kind, str length, str
_HEAD: Final = struct.Struct("<d")  # expires: the leading field of _VALUE
_STR: Final = 1
_INT: Final = 2
_I64_MIN: Final = -(1 << 63)
_I64_MAX: Final = (1 << 63) - 1


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _expired(expires: float, now: float) -> bool:
    return 0 < expires < now


def _absolute(seconds: float, now: float) -> float:
    return now + seconds if seconds > 0 else 0.0


def _pack(value: HtValue, expires: float) -> bytes | None:
    """The stored form of value, or None when it does not fit."""
    if isinstance(value, str):
        raw = _enc(value)
        if len(raw) > HT_VALUE_MAX:
            return None
        return _VALUE.pack(expires, 0, _STR, len(raw), raw)
    if isinstance(value, int):
        if not _I64_MIN <= value <= _I64_MAX:
            return None
        return _VALUE.pack(expires, int(value), _INT, 0, b"")
    raise TypeError(f"htable values are str or int, not {type(value).__name__}")


def _unpack(value: bytes) -> tuple[HtValue, float]:
    expires, number, kind, length, raw = _VALUE.unpack(value)
    return (_dec(raw[:length]) if kind == _STR else int(number)), expires


def _check_tables(tables: Mapping[str, float]) -> Mapping[str, float]:
    checked: dict[str, float] = {}
    for name, autoexpire in tables.items():
        if not name or "\0" in name or len(_enc(name)) >= HT_KEY_MAX:
            raise ValueError(f"bad htable name {name!r}: 1..{HT_KEY_MAX - 1} bytes, no NUL")
        if not math.isfinite(autoexpire) or autoexpire < 0:
            raise ValueError(f"htable {name!r}: autoexpire must be >= 0, got {autoexpire}")
        checked[name] = float(autoexpire)
    return MappingProxyType(checked)


class HTable(KeyedTable):
    """Named shared tables of str/int items with expiry. create() in the supervisor, attach()
    after fork, both with the same `tables` declaration."""

    SUFFIX = "htable"
    TAG = b"htable/1"
    KEY_MAX = HT_KEY_MAX
    VALUE = _VALUE

    def __init__(self, table: StripedTable, tables: Mapping[str, float] = DEFAULT_TABLES) -> None:
        # Use create() or attach().
        super().__init__(table)
        self._tables = _check_tables(tables)

    @classmethod
    def create(
        cls,
        prefix: str,
        lockfile: str | os.PathLike[str],
        n_stripes: int,
        capacity: int,
        tables: Mapping[str, float] = DEFAULT_TABLES,
    ) -> Self:
        """Create the region (supervisor, before fork). Raises FileExistsError if it exists,
        ValueError for a bad table declaration (before anything is created)."""
        checked = _check_tables(tables)
        geometry = cls.geometry(n_stripes, capacity)
        return cls(
            StripedTable.create(cls.region_name(prefix), lockfile, geometry, cls.TAG), checked
        )

    @classmethod
    def attach(
        cls,
        prefix: str,
        lockfile: str | os.PathLike[str],
        n_stripes: int,
        capacity: int,
        tables: Mapping[str, float] = DEFAULT_TABLES,
    ) -> Self:
        """Attach to the region (worker, after fork) with the numbers given to create().

        Raises:
            FileNotFoundError: no such region.
            ShmLayoutError: it was made by another version or with other numbers.
        """
        checked = _check_tables(tables)
        geometry = cls.geometry(n_stripes, capacity)
        return cls(
            StripedTable.attach(cls.region_name(prefix), lockfile, geometry, cls.TAG), checked
        )

    @property
    def tables(self) -> Mapping[str, float]:
        """The declared tables: name -> autoexpire seconds (0 = items never expire)."""
        return self._tables

    def _key(self, table: str, key: str) -> bytes:
        if table not in self._tables:
            raise KeyError(f"no htable named {table!r}")
        return _enc(table) + b"\0" + _enc(key)

    def lookup(self, table: str, key: str, now: float) -> tuple[HtValue, float] | None:
        """(value, absolute expiry or 0) of a live item, or None."""
        value = self.table.get(self._key(table, key))
        if value is None:
            return None
        item = _unpack(value)
        return None if _expired(item[1], now) else item

    def get(self, table: str, key: str, now: float) -> HtValue | None:
        """$sht(table=>key): the item's value, or None when absent or expired."""
        item = self.lookup(table, key, now)
        return None if item is None else item[0]

    def set(
        self, table: str, key: str, value: HtValue, now: float, expires_in: float | None = None
    ) -> bool:
        """Insert or replace an item.

        Args:
            expires_in: seconds from `now`; None for the table's autoexpire, <= 0 for never.
        Returns:
            False when the key or value is too long, the int does not fit in 64 bits, or the
            stripe is full of live items.
        Raises:
            KeyError: undeclared table. TypeError: value is neither str nor int.
        """
        raw_key = self._key(table, key)
        seconds = self._tables[table] if expires_in is None else expires_in
        packed = _pack(value, _absolute(seconds, now))
        if packed is None or len(raw_key) > HT_KEY_MAX:
            return False
        if self.table.put(raw_key, packed):
            return True
        # The stripe is full: expired items must not keep a live one out.
        stripe = self.table.place(raw_key)[0]
        return self.sweep_stripe(stripe, now) > 0 and self.table.put(raw_key, packed)

    def delete(self, table: str, key: str) -> bool:
        """Remove an item; False when there was none (an expired one not yet swept counts)."""
        return self.table.delete(self._key(table, key))

    def expire(self, table: str, key: str, seconds: float, now: float) -> bool:
        """$shtex(table=>key) = seconds: expire now + seconds (never when <= 0).

        Returns:
            False when the item is absent or already expired.
        """
        expires = _HEAD.pack(_absolute(seconds, now))

        def change(old: bytes) -> bytes | None:
            if _expired(_HEAD.unpack_from(old)[0], now):
                return None
            return expires + old[_HEAD.size :]

        return self.table.update(self._key(table, key), change)

    def dump(self, table: str, now: float) -> list[dict[str, HtValue | float]]:
        """The live items of one table for the htable.dump RPC, sorted by key: dicts with
        key, value, type ("str" or "int") and expires (absolute Unix time, 0 = never).

        Stripes are copied one at a time, so the list is not one atomic snapshot.
        """
        prefix = self._key(table, "")
        out: list[dict[str, HtValue | float]] = []
        for i in range(self.n_stripes):
            for key, value in self.table.items(i):
                if not key.startswith(prefix):
                    continue
                item, expires = _unpack(value)
                if not _expired(expires, now):
                    kind = "str" if isinstance(item, str) else "int"
                    key_text = _dec(key[len(prefix) :])
                    out.append({"key": key_text, "value": item, "type": kind, "expires": expires})
        out.sort(key=lambda d: str(d["key"]))
        return out

    def sweep_stripe(self, i: int, now: float) -> int:
        """Remove the items of stripe i (every table) that expired before `now`; the count."""
        return self.table.remove_where(i, _HEAD, lambda head: _expired(head[0], now))
