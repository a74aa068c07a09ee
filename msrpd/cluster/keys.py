"""What the cluster keeps in Redis: every key and channel name, and the pub/sub messages
(sans-IO: no client here, so the names and the codec are tested alone).

Rules:
- Every name starts with [cluster] key_prefix. Addresses, tokens and node names go in as
  they are: Redis keys are binary-safe, and none of them holds the separator's meaning at the
  end of a key (the variable part is always last).
- node:<name>: a hash per node (addr, workers, sessions, health, beat), its TTL node_ttl,
  renewed every heartbeat; nodes: the set of names ever registered, so a node whose entry
  expired is still listed (as lost) until it is removed on a clean stop.
- sess:<token>: the node holding the session, expiring with the token (RFC 4976 §5.3 Expires).
- fails:<addr>: AUTH failures from an address over every node, expiring ban_window after
  the first; ban:<addr>: the ban, its value the end (Unix time), its TTL ban_time.
- events: one channel; a message is a JSON object {"kind", "node", ...}: "ban" carries
  "addr" and "until". decode() refuses anything else (ValueError): a message is from a peer,
  not trusted to be well formed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

__all__ = ["BanEvent", "Keys", "decode_event", "encode_event"]

_MAX_EVENT: Final = 4096


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"

    def session(self, token: str) -> str:
        return f"{self.prefix}sess:{token}"

    def fails(self, addr: str) -> str:
        return f"{self.prefix}fails:{addr}"

    def ban(self, addr: str) -> str:
        return f"{self.prefix}ban:{addr}"

    def ban_pattern(self) -> str:
        """SCAN MATCH pattern of every ban key."""
        return f"{_glob(self.prefix)}ban:*"

    def ban_addr(self, key: str) -> str:
        """The address of a ban key SCAN returned."""
        return _tail(key, f"{self.prefix}ban:")

    def session_pattern(self) -> str:
        """SCAN MATCH pattern of every directory entry."""
        return f"{_glob(self.prefix)}sess:*"

    def token(self, key: str) -> str:
        """The token of a directory entry SCAN returned."""
        return _tail(key, f"{self.prefix}sess:")


def _glob(text: str) -> str:
    """`text` with its glob characters escaped (SCAN MATCH)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _tail(key: str, head: str) -> str:
    if not key.startswith(head):
        raise ValueError(f"not a {head!r} key: {key!r}")
    return key[len(head) :]


@dataclass(frozen=True, slots=True)
class BanEvent:
    """Node `node` banned `addr` until `until` (Unix time) for every node."""

    node: str
    addr: str
    until: float


def encode_event(event: BanEvent) -> str:
    return json.dumps(
        {"kind": "ban", "node": event.node, "addr": event.addr, "until": event.until},
        separators=(",", ":"),
    )


def decode_event(raw: str | bytes) -> BanEvent:
    """The event a message carries.

    Raises:
        ValueError: not an event this version knows, or malformed.
    """
    if len(raw) > _MAX_EVENT:
        raise ValueError(f"event over {_MAX_EVENT} bytes")
    message = json.loads(raw)
    if not isinstance(message, dict) or message.get("kind") != "ban":
        raise ValueError(f"unknown event: {str(raw)[:80]!r}")
    node, addr, until = message.get("node"), message.get("addr"), message.get("until")
    if not (isinstance(node, str) and isinstance(addr, str) and addr):
        raise ValueError("a ban event needs a node and an addr")
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        raise ValueError("a ban event needs a finite until")
    return BanEvent(node, addr, float(until))
