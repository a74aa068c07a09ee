"""Registry: remote address -> owner connection id, shared by every worker.

Rules: msrp_set_dst(addr) and next-hop relaying first look the address up here, so a frame for
a peer that already has a connection goes to whichever worker owns it (DESIGN §2). The key is
the address text exactly as the caller formats it ("tcp:127.0.0.1:40000", "tls:[::1]:2856");
callers normalise (lower-case host, IPv6 in brackets) before calling; workers register a
client's connection under "in:" + its address (workers/conn.py registry_key). unregister()
removes an entry only while it still names the closing connection, so a newer connection to
the same address, registered in between by another worker, is never removed by the old one's
close.
A worker that dies closes nothing: the supervisor purge()s its entries before it respawns it.
Record: 8 header + 96 key + 8 conid = 112 bytes per slot.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from typing import Final

from .keyed import KeyedTable

__all__ = ["REGISTRY_ADDR_MAX", "Registry"]

REGISTRY_ADDR_MAX: Final = 96
_VALUE: Final = struct.Struct("<Q")
_U64_MAX: Final = (1 << 64) - 1


def _enc(addr: str) -> bytes:
    return addr.encode("utf-8", "surrogateescape")


class Registry(KeyedTable):
    """Address -> conid in shared memory. create() in the supervisor, attach() after fork."""

    SUFFIX = "registry"
    TAG = b"registry/1"
    KEY_MAX = REGISTRY_ADDR_MAX
    VALUE = _VALUE

    def register(self, addr: str, conid: int) -> bool:
        """Map addr to conid, replacing any previous mapping.

        Returns:
            False when addr is longer than 96 bytes or its stripe is full.
        Raises:
            ValueError: conid is not a u64.
        """
        if not 0 <= conid <= _U64_MAX:
            raise ValueError(f"conid must be a u64, got {conid}")
        return self.table.put(_enc(addr), _VALUE.pack(conid))

    def lookup(self, addr: str) -> int | None:
        """The connection id registered for addr, or None."""
        value = self.table.get(_enc(addr))
        return None if value is None else int(_VALUE.unpack(value)[0])

    def unregister(self, addr: str, conid: int) -> bool:
        """Remove addr only if it still maps to conid; True if it was removed."""
        return self.table.delete(_enc(addr), _VALUE, lambda head: head[0] == conid)

    def keys_of(self, conids: Container[int], prefix: str) -> list[str]:
        """The addresses starting with `prefix` whose conid is in `conids` (a dead worker's,
        before purge: its clients' connections, whose limits' counts go back)."""
        raw = _enc(prefix)
        return [
            key[len(raw) :].decode("utf-8", "surrogateescape")
            for i in range(self.n_stripes)
            for key, value in self.table.items(i)
            if key.startswith(raw) and _VALUE.unpack(value)[0] in conids
        ]

    def purge(self, conids: Container[int]) -> int:
        """Remove every entry whose conid is in `conids` (a dead worker's range, issue 12);
        all stripes, one lock at a time; the count."""
        return sum(
            self.table.remove_where(i, _VALUE, lambda head: head[0] in conids)
            for i in range(self.n_stripes)
        )
