"""msrp_cmap_save / msrp_cmap_lookup semantics (reference §8.2-§8.3) without Kamailio's bugs.

Rules:
- The grant follows RFC 4976 §5.1/§6.3: no Expires → auth_max_expires; below the minimum →
  423 with Min-Expires, above the maximum → 423 with Max-Expires (RFC 4976 §4.6), with the
  RFC 4975 §10 reason "Interval Out-of-Bounds" (Kamailio writes "Out Of Bounds"); a value that
  is not 1*DIGIT (RFC 4976 §7) → 400. Kamailio 5.6.3 answers 423 to every Expires instead.
- The session id is 96 bits from the CSPRNG (RFC 4976 §6.3 wants it unguessable; Kamailio's
  is a counter). Use-Path is `msrp[s]://<use_path_addr or listen address>/<sid>;tcp`, `s`
  when the AUTH came over TLS or wss, `;ws` when over WebSocket (RFC 7977 §5.2: the URI the
  client reaches us by); a scheme given in use_path_addr is not doubled.
- A user over [limits] max_sessions_per_user is answered 403 and gets no session
  (env.claim_session; the count is over every worker, workers/limits.py).
- Lookup is an exact match on To-Path #1's session id and never returns an expired entry.
"""

from __future__ import annotations

import re
from typing import Final, cast

from ..protocol import ConnInfo, Frame, LocalProtocolError, build_reply, parse_uri
from ..protocol.digest import parse_authorization
from ..shm import CmapEntry
from ..shm.cmap import key_of
from .env import Destination, HotEnv, RouteEnv

__all__ = [
    "fast_session",
    "grant_expires",
    "lookup",
    "save",
    "session_key",
    "session_of",
    "use_path",
]

_DIGITS = re.compile(rb"[0-9]{1,10}")
_SCHEME = re.compile(r"^msrps?://", re.I)
# msrp[s]://host[:port]/session;transport with plain characters only (RFC 4975 §9: session-id
# is unreserved / "+" / "=" / "/"); a URI with userinfo, IPv6 or escapes takes the full parser.
# Case-insensitive in the scheme and transport only: re.I over the whole pattern makes every
# character of the session id a case-folded class test.
_FAST_SESSION = re.compile(
    rb"(?i:msrps?)://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/([A-Za-z0-9._~+=/-]+);[A-Za-z]+"
)
# URIs of that shape already read -> their session id. Every frame of a session names the
# same To-Path #1 (this relay's URI for the session, RFC 4976 §6.2), so a SEND costs one dict
# lookup, not a match. A pure function's memo: always right, only bounded: URIs up to
# _MEMO_URI bytes, emptied when it holds _MEMO_MAX (worst case about 1 MB per worker).
_MEMO: Final[dict[bytes, bytes]] = {}
_MEMO_MAX: Final = 4096
_MEMO_URI: Final = 128


def grant_expires(value: bytes | None, low: int, high: int) -> tuple[int, str, str]:
    """(grant, "", "") or (status, reason, extra header) for a refusal."""
    if value is None:
        return high, "", ""
    if not _DIGITS.fullmatch(value.strip()):
        return 400, "Bad Request (Expires is not a number)", ""
    asked = int(value)
    if asked < low:
        return 423, "Interval Out-of-Bounds", f"Min-Expires: {low}\r\n"
    if asked > high:
        return 423, "Interval Out-of-Bounds", f"Max-Expires: {high}\r\n"
    return asked, "", ""


def use_path(conn: ConnInfo, addr: str | None, sessid: str) -> str:
    proto, _, listen = conn.srcsock.partition(":")
    scheme = "msrps" if proto in ("tls", "wss") else "msrp"
    # Toward a WebSocket client the relay's URI names the ws transport (RFC 7977 §5.2).
    transport = "ws" if proto in ("ws", "wss") else "tcp"
    host = _SCHEME.sub("", addr) if addr else listen
    return f"{scheme}://{host}/{sessid};{transport}"


def save(frame: Frame, conn: ConnInfo, env: RouteEnv, reply_flags: int, hdrs: str = "") -> int:
    cmap, policy = env.cmap, env.policy
    if cmap is None or conn.conid is None:
        return -1
    if conn.node:
        # A link from another node of the cluster (cluster/nodecerts.py) carries other
        # clients' frames: a token it owned would let any of them use it as their own.
        env.write_origin(
            build_reply(frame, 403, "Forbidden (no session on a node link)"), reply_flags
        )
        return -1
    grant, reason, extra = grant_expires(
        frame.header("Expires"), policy.auth_min_expires, policy.auth_max_expires
    )
    if reason:
        env.write_origin(build_reply(frame, grant, reason, extra), reply_flags)
        return -3 if grant == 423 else -1
    sessid = env.new_session_id()
    user = _username(frame)
    refusal = env.claim_session(user, sessid)
    if refusal is not None:
        env.write_origin(build_reply(frame, *refusal), reply_flags)  # 403: too many sessions
        return -1
    peer = frame.from_path[-1] if frame.from_path else ""
    entry = CmapEntry(sessid, conn.conid, peer, conn.srcaddr, conn.srcsock, env.now() + grant)
    if not cmap.save(entry):
        # Full table: refuse cleanly rather than evict someone (DESIGN §8).
        env.write_origin(build_reply(frame, 500, "Server Error (session table full)"), reply_flags)
        return -1
    env.session_saved(sessid, user)
    path = use_path(conn, policy.use_path_addr, sessid)
    extra = f"Use-Path: {path}\r\nExpires: {grant}\r\n{hdrs}"
    env.write_origin(build_reply(frame, 200, "OK", extra), reply_flags)
    return 1


def _username(frame: Frame) -> str:
    value = frame.header("Authorization")
    try:
        return "" if value is None else parse_authorization(value).username
    except LocalProtocolError:
        return ""


def fast_session(uri: bytes) -> bytes | None:
    """The session id of a URI of _FAST_SESSION's shape; None for any other shape, which the
    full parser reads."""
    sessid = _MEMO.get(uri)
    if sessid is not None:
        return sessid
    match = _FAST_SESSION.fullmatch(uri)
    if match is None:
        return None
    sessid = match[1]
    if len(uri) <= _MEMO_URI:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        _MEMO[uri] = sessid
    return sessid


def session_of(frame: Frame) -> str | None:
    """To-Path #1's session id. The common shape is read by fast_session on the raw URI;
    anything else goes through the full parser."""
    fast = fast_session(frame.first_to)
    if fast is not None:
        return fast.decode("ascii")
    return _parsed_session(frame)


def session_key(frame: Frame) -> bytes | None:
    """session_of() as the cmap's key (key_of): the fast shape's bytes need no decoding."""
    fast = fast_session(frame.first_to)
    if fast is not None:
        return fast
    sessid = _parsed_session(frame)
    return None if sessid is None else key_of(sessid)


def _parsed_session(frame: Frame) -> str | None:
    try:
        return parse_uri(frame.to_path[0]).session
    except (LocalProtocolError, IndexError):
        return None


def lookup(frame: Frame, env: RouteEnv) -> tuple[Destination | None, int]:
    # The worker's env read natively, compiled (env.HotEnv); another through the Protocol.
    hot = cast(HotEnv, env) if isinstance(env, HotEnv) else None
    cmap = env.cmap if hot is None else hot.cmap
    if cmap is None:
        return None, -1
    key = session_key(frame)
    if not key:
        return None, -3  # no session id, or an empty one
    found = cmap.owner_key(key)
    if found is None or found.expires < (env.now() if hot is None else hot.now()):
        return None, -4
    return Destination(None, found.conid, found.sock), 1
