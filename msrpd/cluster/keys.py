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
- usage:<node>: a hash per node, user -> its live sessions there (cluster/usage.py), its TTL
  node_ttl, rewritten every heartbeat: a node gone takes its users' sessions with it.
- fails:<addr>: AUTH failures from an address over every node, expiring ban_window after
  the first; ban:<addr>: the ban, its value the end (Unix time), its TTL ban_time.
- events: one channel; a message is a JSON object {"kind", "node", ...}, "node" its sender:
  "ban" carries "addr" and "until"; "kill" (kills.py) carries "target" (the node to act),
  "sessid" and "id" (the request's); "killed", the target's answer, carries "to" (the asker),
  "id", "killed" (bool), "conid" (hex text or null) and "closed" (bool or null); "list"
  (listconns.py) asks every other node for its connections, carrying "id"; "listed", an
  answer, carries "to", "id", and "rows" (a list of objects) or "error" (a text).
  decode_event() refuses anything else (ValueError): a message is from a peer, not trusted to
  be well formed. A "listed" may be up to MAX_LISTED bytes, any other event 4096.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_LISTED",
    "BanEvent",
    "Event",
    "Keys",
    "KillEvent",
    "KilledEvent",
    "ListEvent",
    "ListedEvent",
    "decode_event",
    "encode_event",
]

_MAX_EVENT: Final = 4096
MAX_LISTED: Final = 1024 * 1024
"""Longest "listed" event: a node's connections (about 5,000 of them)."""
_MAX_NAME: Final = 256
"""Longest node name or request id accepted in an event."""
_SESSID_MAX: Final = 64
"""The cmap's (shm/cmap.py SESSID_MAX): a longer id names no session."""
_HEX: Final = "0123456789abcdef"


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

    def usage(self, node: str) -> str:
        return f"{self.prefix}usage:{node}"

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


@dataclass(frozen=True, slots=True)
class KillEvent:
    """Node `node` asks node `target` to kill its session `sessid` (request `id`)."""

    node: str
    target: str
    sessid: str
    id: str


@dataclass(frozen=True, slots=True)
class KilledEvent:
    """Node `node` answers request `id` of node `to`: what its kill did."""

    node: str
    to: str
    id: str
    killed: bool
    conid: str | None
    closed: bool | None


@dataclass(frozen=True, slots=True)
class ListEvent:
    """Node `node` asks every other node for its connections (request `id`)."""

    node: str
    id: str


@dataclass(frozen=True, slots=True)
class ListedEvent:
    """Node `node` answers request `id` of node `to`: its connections, or why not."""

    node: str
    to: str
    id: str
    rows: list[dict[str, object]] | None
    error: str | None = None


Event = BanEvent | KillEvent | KilledEvent | ListEvent | ListedEvent


def encode_event(event: Event) -> str:
    if isinstance(event, BanEvent):
        fields: dict[str, object] = {
            "kind": "ban", "node": event.node, "addr": event.addr, "until": event.until
        }  # fmt: skip
    elif isinstance(event, KillEvent):
        fields = {"kind": "kill", "node": event.node, "target": event.target}
        fields |= {"sessid": event.sessid, "id": event.id}
    elif isinstance(event, KilledEvent):
        fields = {"kind": "killed", "node": event.node, "to": event.to, "id": event.id}
        fields |= {"killed": event.killed, "conid": event.conid, "closed": event.closed}
    elif isinstance(event, ListEvent):
        fields = {"kind": "list", "node": event.node, "id": event.id}
    else:
        fields = {"kind": "listed", "node": event.node, "to": event.to, "id": event.id}
        fields |= {"rows": event.rows} if event.error is None else {"error": event.error}
    return json.dumps(fields, separators=(",", ":"))


def decode_event(raw: str | bytes) -> Event:
    """The event a message carries.

    Raises:
        ValueError: not an event this version knows, or malformed.
    """
    if len(raw) > MAX_LISTED:
        raise ValueError(f"event over {MAX_LISTED} bytes")
    try:
        message = json.loads(raw)
    except RecursionError:  # "[[[[...": deep nesting within the limit
        raise ValueError("event nested too deep") from None
    kind = message.get("kind") if isinstance(message, dict) else None
    if kind == "listed":
        return _listed(message)
    if len(raw) > _MAX_EVENT:
        raise ValueError(f"event over {_MAX_EVENT} bytes")
    if kind == "list":
        return ListEvent(_name(message, "node"), _name(message, "id"))
    if kind == "ban":
        return _ban(message)
    if kind == "kill":
        return _kill(message)
    if kind == "killed":
        return _killed(message)
    raise ValueError(f"unknown event: {str(raw)[:80]!r}")


def _name(message: dict[str, object], key: str, limit: int = _MAX_NAME) -> str:
    value = message.get(key)
    if not (isinstance(value, str) and 0 < len(value) <= limit):
        raise ValueError(
            f"a {message['kind']} event needs {key}: a text of 1 to {limit} characters"
        )
    return value


def _ban(message: dict[str, object]) -> BanEvent:
    node, addr, until = message.get("node"), message.get("addr"), message.get("until")
    if not (isinstance(node, str) and isinstance(addr, str) and addr):
        raise ValueError("a ban event needs a node and an addr")
    if isinstance(until, bool) or not isinstance(until, int | float) or not math.isfinite(until):
        raise ValueError("a ban event needs a finite until")
    return BanEvent(node, addr, float(until))


def _kill(message: dict[str, object]) -> KillEvent:
    return KillEvent(
        _name(message, "node"),
        _name(message, "target"),
        _name(message, "sessid", _SESSID_MAX),
        _name(message, "id"),
    )


def _killed(message: dict[str, object]) -> KilledEvent:
    killed, conid, closed = message.get("killed"), message.get("conid"), message.get("closed")
    if not isinstance(killed, bool):
        raise ValueError("a killed event needs killed, true or false")
    hexdigits = isinstance(conid, str) and 0 < len(conid) <= 16 and conid.strip(_HEX) == ""
    if not (conid is None or hexdigits):
        raise ValueError("a killed event's conid is null or up to 16 hex digits")
    if not (closed is None or isinstance(closed, bool)):
        raise ValueError("a killed event's closed is true, false or null")
    node, to, id_ = _name(message, "node"), _name(message, "to"), _name(message, "id")
    return KilledEvent(node, to, id_, killed, conid if isinstance(conid, str) else None, closed)


def _listed(message: dict[str, object]) -> ListedEvent:
    node, to, id_ = _name(message, "node"), _name(message, "to"), _name(message, "id")
    rows, error = message.get("rows"), message.get("error")
    if isinstance(error, str) and "rows" not in message:
        return ListedEvent(node, to, id_, None, error[:_MAX_NAME])
    if "error" in message or not (
        isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
    ):
        raise ValueError("a listed event carries rows (a list of objects) or an error (a text)")
    return ListedEvent(node, to, id_, rows)
