"""Cmap: the shared connection map of authenticated sessions (Kamailio's msrp cmap, fixed).

Rules (reference/kamailio-msrp.md §8, minus its bugs):
- Key: the session id, exact and case-sensitive (Kamailio hashes case-insensitively and its
  lookup reports success for an unknown id that sorts before a stored hash; here a lookup
  compares the whole id, so only the saved id matches).
- An entry whose `expires` is earlier than `now` is never returned, even before the sweep
  removes it (Kamailio returns it until its timer runs). sweep_stripe() removes entries with
  expires strictly < now, as msrp_cmap_clean does.
- save() replaces an entry with the same session id (Kamailio adds duplicates).
- Field limits are bytes of UTF-8: sessid 64, addr 96, sock 96 (longer: save returns False);
  peer 256, truncated to 253 bytes plus "..." (it is only shown by msrp.cmaplist).
- Strings are encoded with surrogateescape, so no str makes save or lookup raise.
- owner_key (every relayed frame) keeps its answers per process, each with the version its
  stripe had when read, and gives one again only while the stripe still has that version:
  any process's write to the stripe is seen by the next lookup (test_cmap_owners.py).
- Record: 8 header + 64 key + 468 value (conid u64, expires f64, three lengths, three fixed
  byte fields) = 540, padded to 544 bytes per slot.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

from .keyed import KeyedTable
from .stripes import RECORD_HEAD
from .table import StripedTable

__all__ = [
    "ADDR_MAX",
    "PEER_MAX",
    "SESSID_MAX",
    "SOCK_MAX",
    "Cmap",
    "CmapEntry",
    "Owner",
    "key_of",
]

SESSID_MAX: Final = 64
PEER_MAX: Final = 256
ADDR_MAX: Final = 96
SOCK_MAX: Final = 96
_ELLIPSIS: Final = b"..."
_VALUE: Final = struct.Struct(f"<QdHBB{PEER_MAX}s{ADDR_MAX}s{SOCK_MAX}s")
_HEAD: Final = struct.Struct("<Qd")  # conid, expires: the leading fields of _VALUE
# What routing a frame reads (Cmap.owner_key), from a whole record (StripedTable.record, the
# value after the slot head and the key): conid, expires and sock's length; then sock itself.
_IN_RECORD: Final = RECORD_HEAD + SESSID_MAX
_owner_head: Final = struct.Struct(f"<{_IN_RECORD}xQd").unpack_from  # bound: one per frame
_SOCK_LEN_AT: Final = _IN_RECORD + struct.calcsize("<QdHB")
_SOCK_AT: Final = _IN_RECORD + _VALUE.size - SOCK_MAX
_CONID: Final = struct.Struct("<Q")
_OWNERS_MAX: Final = 4096
_U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class CmapEntry:
    """One authenticated session, as msrp.cmaplist shows it."""

    sessid: str
    """The session id the relay generated for the AUTH (the Use-Path URI's session part)."""
    conid: int
    """Connection id (u64) of the client connection that authenticated; names its owner."""
    peer: str
    """The last From-Path URI of the AUTH (the client), for display."""
    addr: str
    """The client's source address as an MSRP URI authority, e.g. "msrp://192.0.2.1:40000"."""
    sock: str
    """The receiving socket, e.g. "tcp:127.0.0.1:2855"."""
    expires: float
    """Absolute expiry (Unix time)."""


class Owner:
    """What routing a frame reads of a session (Cmap.owner_key), and when it was read.

    A plain class, not a tuple: one is read per relayed frame, and mypyc reads a native
    object's fields directly where it unboxes and boxes a tuple's again. Read-only: the
    cache hands the same object to every lookup of the session while it is current.
    """

    __slots__ = ("conid", "expires", "sock", "stamp", "version")

    def __init__(self, conid: int, sock: str, expires: float, stamp: int, version: int) -> None:
        self.conid: Final = conid
        self.sock: Final = sock
        self.expires: Final = expires
        """Absolute expiry (Unix time); the caller decides what an expired session gets."""
        self.stamp: Final = stamp
        self.version: Final = version
        """Read while its stripe had this version (StripedTable.record)."""


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def key_of(sessid: str) -> bytes:
    """The key a session id is stored under (its UTF-8 bytes, surrogateescape): for owner_key.
    An ASCII id's key is its ASCII bytes."""
    return _enc(sessid)


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _peer_bytes(peer: str) -> bytes:
    raw = _enc(peer)
    if len(raw) <= PEER_MAX:
        return raw
    cut = PEER_MAX - len(_ELLIPSIS)
    while cut > 0 and 0x80 <= raw[cut] < 0xC0:  # never cut inside a UTF-8 sequence
        cut -= 1
    return raw[:cut] + _ELLIPSIS


def _decode(sessid: bytes, value: bytes) -> CmapEntry:
    conid, expires, peer_len, addr_len, sock_len, peer, addr, sock = _VALUE.unpack(value)
    return CmapEntry(
        _dec(sessid),
        conid,
        _dec(peer[:peer_len]),
        _dec(addr[:addr_len]),
        _dec(sock[:sock_len]),
        expires,
    )


class Cmap(KeyedTable):
    """Session id -> CmapEntry in shared memory. create() in the supervisor, attach() after fork."""

    SUFFIX = "cmap"
    TAG = b"cmap/1"
    KEY_MAX = SESSID_MAX
    VALUE = _VALUE

    def __init__(self, table: StripedTable) -> None:
        super().__init__(table)
        # key -> owner_key's answers, each with its stripe's version; emptied when full.
        self._owners: dict[bytes, Owner] = {}

    def save(self, entry: CmapEntry) -> bool:
        """Insert, or replace the entry with the same session id.

        Returns:
            False when a field is too long or the session id's stripe is full.
        Raises:
            ValueError: conid is not a u64.
        """
        if not 0 <= entry.conid <= _U64_MAX:
            raise ValueError(f"conid must be a u64, got {entry.conid}")
        addr, sock, peer = _enc(entry.addr), _enc(entry.sock), _peer_bytes(entry.peer)
        if len(addr) > ADDR_MAX or len(sock) > SOCK_MAX:
            return False
        value = _VALUE.pack(
            entry.conid, entry.expires, len(peer), len(addr), len(sock), peer, addr, sock
        )
        return self.table.put(_enc(entry.sessid), value)

    def lookup(self, sessid: str, now: float) -> CmapEntry | None:
        """The entry saved under exactly this session id, unless it expired before `now`."""
        key = _enc(sessid)
        value = self.table.get(key)
        if value is None:
            return None
        entry = _decode(key, value)
        return None if entry.expires < now else entry

    def owner(self, sessid: str) -> tuple[int, str, float] | None:
        """(conid, sock, expires) of the entry saved under exactly this session id, expired
        or not: what routing a frame needs, with nothing else decoded (one per frame)."""
        found = self.owner_key(_enc(sessid))
        return None if found is None else (found.conid, found.sock, found.expires)

    def owner_key(self, key: bytes) -> Owner | None:
        """owner() of the session id whose key_of() is `key` (routing reads the id as bytes).

        The answers are cached with the version their stripe had when read; one is given
        again only while the stripe still has that version. A writer in any process changes
        the version before it changes a record, and a version never repeats (stripes.py), so
        a session removed, replaced or moved by another worker is seen by the next lookup.
        """
        known = self._owners.get(key)
        if known is not None and self.table.unchanged(known.stamp, known.version):
            return known
        stamp, version, record = self.table.record(key)
        if record is None:
            if known is not None:
                del self._owners[key]
            return None
        conid, expires = _owner_head(record)
        sock = _dec(record[_SOCK_AT : _SOCK_AT + record[_SOCK_LEN_AT]])
        owner = Owner(conid, sock, expires, stamp, version)
        if len(self._owners) >= _OWNERS_MAX:
            self._owners.clear()
        self._owners[key] = owner
        return owner

    def rebind(self, sessid: str, old_conid: int, new_conid: int) -> bool:
        """Point a session of connection `old_conid` at `new_conid` (the connection moved to
        another worker); False when the session is gone or belongs to another connection."""

        def change(value: bytes) -> bytes | None:
            if _HEAD.unpack_from(value)[0] != old_conid:
                return None
            return _CONID.pack(new_conid) + value[_CONID.size :]

        return self.table.update(_enc(sessid), change)

    def delete(self, sessid: str) -> bool:
        """Remove one session; False if it was not there."""
        return self.table.delete(_enc(sessid))

    def delete_conn(self, conid: int) -> int:
        """Remove every entry of one connection (all stripes, one lock at a time); the count."""
        return sum(
            self.table.remove_where(i, _HEAD, lambda head: head[0] == conid)
            for i in range(self.n_stripes)
        )

    def purge(self, conids: Container[int]) -> int:
        """Remove every entry whose conid is in `conids` (a dead worker's range: its
        sessions died with it, issue 12); all stripes, one lock at a time; the count."""
        return sum(
            self.table.remove_where(i, _HEAD, lambda head: head[0] in conids)
            for i in range(self.n_stripes)
        )

    def sweep_stripe(self, i: int, now: float) -> int:
        """Remove the entries of stripe i with expires < now; the number removed."""
        return self.table.remove_where(i, _HEAD, lambda head: head[1] < now)

    def expiries(self) -> dict[str, float]:
        """Session id -> expires of every entry, expired ones not yet swept included (the
        cluster agent's directory, cluster/directory.py): no entry decoded beyond its head."""
        head = _HEAD.unpack_from
        return {
            _dec(key): head(value)[1]
            for i in range(self.n_stripes)
            for key, value in self.table.items(i)
        }

    def entries(self) -> list[CmapEntry]:
        """Every entry, expired ones not yet swept included, for msrp.cmaplist.

        Stripes are copied one at a time, so the list is not one atomic snapshot.
        """
        return [
            _decode(key, value) for i in range(self.n_stripes) for key, value in self.table.items(i)
        ]
