"""The script's shared tables: Kamailio's $sht(t=>k) and $shtex(t=>k) over shm.HTable.

Rules (Kamailio htable module: pv $sht/$shtex, KEMI KSR.htable.sht_*):
- Every worker sees the same items: they live in shared memory (shm/htstore.py), and the clock
  is the worker's (`now`), read once per call.
- Return codes as Kamailio's KEMI functions, where a script branches: 1 success, -1 failure.
  Kamailio's sht_rm and $shtex also "succeed" on a missing item; here delete() and expire()
  return -1 for one, so a script can tell (a script that ignores the code behaves the same).
- Assigning None deletes the item, as `$sht(t=>k) = $null` does.
- Naming an undeclared table raises KeyError: Kamailio refuses such a config at startup; here
  the worker logs it with the frame's tid (and answers a request 500).
- A value that cannot be stored (too long, too wide, stripe full) makes set() return -1, and
  the mapping view's item assignment raise ValueError: a lost session must not go unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..shm import HTable, HtValue

__all__ = ["ScriptHTable", "ShtView"]


class ScriptHTable:
    """`msrp.htable`: get/set/delete/expire on the shared tables, Kamailio's semantics."""

    __slots__ = ("_ht", "_now")

    def __init__(self, htable: HTable, now: Callable[[], float]) -> None:
        self._ht = htable
        self._now = now

    @property
    def tables(self) -> Mapping[str, float]:
        """Declared tables: name -> autoexpire seconds (0 = never)."""
        return self._ht.tables

    def get(self, table: str, key: str) -> HtValue | None:
        """$sht(table=>key): the value, or None ($null) when absent or expired."""
        return self._ht.get(table, key, self._now())

    def set(self, table: str, key: str, value: HtValue | None) -> int:
        """$sht(table=>key) = value, with the table's autoexpire; None deletes the item.

        Returns:
            1, or -1 when the key or value is too long, the int does not fit in 64 bits, or
            the table is full.
        """
        if value is None:
            self._ht.delete(table, key)
            return 1
        return 1 if self._ht.set(table, key, value, self._now()) else -1

    def delete(self, table: str, key: str) -> int:
        """sht_rm(table, key): 1 when an item was removed, -1 when there was none."""
        return 1 if self._ht.delete(table, key) else -1

    def expire(self, table: str, key: str, seconds: float) -> int:
        """$shtex(table=>key) = seconds: expire `seconds` from now (never when <= 0).

        Returns:
            1, or -1 when the item is absent or already expired.
        """
        return 1 if self._ht.expire(table, key, seconds, self._now()) else -1

    def ttl(self, table: str, key: str) -> int:
        """Reading $shtex(table=>key): whole seconds left, 0 when it never expires or is absent."""
        now = self._now()
        item = self._ht.lookup(table, key, now)
        if item is None or item[1] == 0:
            return 0
        return max(0, int(item[1] - now))

    def sht(self, table: str) -> ShtView:
        """A mapping-like view of one table: `sht["k"]`, `sht["k"] = v`, `del sht["k"]`.

        Raises:
            KeyError: the table is not declared.
        """
        if table not in self._ht.tables:
            raise KeyError(f"no htable named {table!r}")
        return ShtView(self, table)


class ShtView:
    """One table, as `$sht(table=>...)` reads: missing items read as None, never KeyError."""

    __slots__ = ("_ht", "table")

    def __init__(self, ht: ScriptHTable, table: str) -> None:
        self._ht = ht
        self.table = table

    def __getitem__(self, key: str) -> HtValue | None:
        return self._ht.get(self.table, key)

    def __setitem__(self, key: str, value: HtValue | None) -> None:
        if self._ht.set(self.table, key, value) < 0:
            raise ValueError(f"$sht({self.table}=>{key}): value not stored (too long or full)")

    def __delitem__(self, key: str) -> None:
        # `$sht(t=>k) = $null` on a missing item is not an error.
        self._ht.delete(self.table, key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ht.get(self.table, key) is not None

    def get(self, key: str, default: HtValue | None = None) -> HtValue | None:
        value = self._ht.get(self.table, key)
        return default if value is None else value

    def expire(self, key: str, seconds: float) -> int:
        """$shtex(table=>key) = seconds; see ScriptHTable.expire."""
        return self._ht.expire(self.table, key, seconds)

    def ttl(self, key: str) -> int:
        """Reading $shtex(table=>key); see ScriptHTable.ttl."""
        return self._ht.ttl(self.table, key)
