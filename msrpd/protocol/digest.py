"""HTTP Digest for MSRP AUTH: the 401 challenge, Authorization parsing, verification, nonces.

Rules:
- RFC 2617 Digest with algorithm MD5 and qop=auth only, as RFC 4976 §9.1 profiles it: the relay
  never offers auth-int or MD5-sess, and H(A2) is MD5("AUTH:" + uri).
- The uri is the one the client hashed. A `uri=` parameter, when present, is what `verify` uses;
  when absent (the RFC 4976 ABNF and examples omit it, and AG Projects' msrplib clients send
  none) the caller supplies the To-Path URI as sent. Kamailio's auth module hashes whatever
  `uri=` says and never compares it with the To-Path: a digest over another uri is accepted
  (oracle golden cmap/auth_digest_uri_mismatch). msrpd keeps that split: `verify` checks the
  digest over the header's uri, and `uri_matches` lets the caller refuse a digest that names
  another uri (RFC 4976 §9.1 "should equal").
- Parsing is lenient where the field is: Kamailio's auth module and msrplib clients send nc and
  qop quoted or not, so every value may be a quoted-string or a bare word; whitespace around
  ',' and '=' is optional and empty list elements are skipped (RFC 2616 #rule). Duplicated
  parameters are refused: two differing `response=` or `uri=` values have no safe reading.
- Every failure to understand the header is a LocalProtocolError (400), never another type.
- The challenge is Kamailio's exact shape (`realm`, `nonce`, `qop="auth"`); `opaque` and
  `stale=true` appear only when the caller asks.
- Nonces are stateless: issue time plus an HMAC under the caller's secret. Time and the secret
  come from the caller (sans-IO); nc replay tracking needs shared memory and lives elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from .errors import LocalProtocolError
from .status import Status

__all__ = (
    "Credentials",
    "NonceState",
    "challenge",
    "check_nonce",
    "ha1",
    "make_nonce",
    "nc_value",
    "nonce_time",
    "parse_authorization",
    "response_for",
    "rspauth",
    "uri_matches",
    "verify",
)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A quoted-string admits HTAB and any non-CTL character; a backslash escapes the next one
# (RFC 2616 quoted-pair; RFC 4975 only ever needs \" and \\).
_QUOTED = r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"'
# Bare values are wider than a token: clients send nonce and uri unquoted too.
_BARE = r'([^ \t",\\\x00-\x1f\x7f]+)'
_SCHEME_RE = re.compile(rf"({_TOKEN})(?:[ \t]+|\Z)")
_PARAM_RE = re.compile(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:{_QUOTED}|{_BARE})[ \t]*(?:,|\Z)")
_EMPTY_ELEMENT_RE = re.compile(r"[ \t]*,")
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{32}")
_NONCE_TIME = struct.Struct(">Q")
_NONCE_SALT_SIZE = 4
_NONCE_MAC_SIZE = 12
_NONCE_MAX_SKEW = 5.0
_REQUIRED = ("username", "realm", "nonce", "response")


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of one `Authorization: Digest ...` header.

    `params` holds every parameter as parsed, names lower-cased, values unquoted; it is
    read-only and left out of the hash.
    """

    username: str
    realm: str
    nonce: str
    uri: str | None
    response: str
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    algorithm: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, hash=False)


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


def _bad(msg: str, status: Status = Status.UNINTELLIGIBLE) -> LocalProtocolError:
    return LocalProtocolError(f"Authorization: {msg}", status)


def _quote(value: str) -> str:
    if _CTL_RE.search(value):
        raise LocalProtocolError("challenge parameter contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _md5(text: str) -> str:
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise _bad("value is not encodable text") from exc
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def challenge(realm: str, nonce: str, opaque: str | None = None, stale: bool = False) -> str:
    """Build the WWW-Authenticate value of a 401 to AUTH (RFC 4976 §5.1, Kamailio's shape).

    Raises:
        LocalProtocolError: a value contains a control character (it would break the header).
    """
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if stale:
        parts.append("stale=true")
    parts.append('qop="auth"')
    return ", ".join(parts)


def _split_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        empty = _EMPTY_ELEMENT_RE.match(text, pos)
        if empty is not None:
            pos = empty.end()
            continue
        m = _PARAM_RE.match(text, pos)
        if m is None:
            raise _bad(f"malformed parameter at offset {pos}")
        name = m.group(1).lower()
        if name in params:
            raise _bad(f"duplicate parameter {name!r}")
        quoted = m.group(2)
        params[name] = m.group(3) if quoted is None else _ESCAPE_RE.sub(r"\1", quoted)
        pos = m.end()
    return params


def _decode(value: str | bytes) -> str:
    if isinstance(value, bytes):
        # RFC 4975 header text is UTF-8 but not strictly validated; keep the raw bytes.
        return value.decode("utf-8", "surrogateescape")
    return value


def parse_authorization(value: str | bytes) -> Credentials:
    """Parse the value of an `Authorization` header (RFC 2617 §3.2.2, RFC 4976 §9.1).

    Raises:
        LocalProtocolError: the value is not a usable Digest header. Status 400, except a
            well-formed non-Digest scheme (such as Basic), which gets 401 so the caller can
            answer with a Digest challenge (RFC 4976 §9.1: never accept Basic).
    """
    text = _decode(value).strip(" \t")
    scheme = _SCHEME_RE.match(text)
    if scheme is None:
        raise _bad("no authentication scheme")
    if scheme.group(1).lower() != "digest":
        raise _bad(f"scheme {scheme.group(1)!r} is not Digest", Status.UNAUTHORIZED)
    params = _split_params(text[scheme.end() :])
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise _bad(f"missing {', '.join(missing)}")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params.get("uri"),
        response=params["response"],
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        algorithm=params.get("algorithm"),
        params=MappingProxyType(params),
    )


def ha1(username: str, realm: str, password: str) -> str:
    """MD5 hex of "username:realm:password" (RFC 2617 §3.2.2.2, algorithm MD5)."""
    return _md5(f"{username}:{realm}:{password}")


def response_for(
    creds: Credentials, ha1_hex: str, method: str = "AUTH", uri: str | None = None
) -> str:
    """The request-digest the client should have sent (RFC 2617 §3.2.2.1), lowercase hex.

    `uri` is used only when the header has no `uri=` parameter: pass the To-Path URI as sent.

    Raises:
        LocalProtocolError: algorithm other than MD5, qop other than auth, qop without nc or
            cnonce, or no uri at all.
    """
    if creds.algorithm is not None and creds.algorithm.lower() != "md5":
        raise _bad(f"unsupported algorithm {creds.algorithm!r}")
    digest_uri = creds.uri if creds.uri is not None else uri
    if digest_uri is None:
        raise _bad("no uri to compute the digest over")
    ha2 = _md5(f"{method}:{digest_uri}")
    if creds.qop is None:
        # RFC 2069 compatibility form (RFC 2617 §3.2.2.1); RFC 4976 clients always send qop.
        return _md5(f"{ha1_hex.lower()}:{creds.nonce}:{ha2}")
    if creds.qop.lower() != "auth":
        raise _bad(f"unsupported qop {creds.qop!r}")
    if creds.nc is None or creds.cnonce is None:
        raise _bad("qop=auth without nc and cnonce")
    # The qop is hashed as sent: the client hashed its own spelling.
    return _md5(f"{ha1_hex.lower()}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")


def rspauth(creds: Credentials, ha1_hex: str, uri: str | None = None) -> str:
    """The `rspauth` of Authentication-Info: the same A1, A2 = ":" digest-uri (RFC 2617 §3.2.3).

    Raises:
        LocalProtocolError: as response_for.
    """
    return response_for(creds, ha1_hex, method="", uri=uri)


def verify(
    creds: Credentials,
    *,
    method: str = "AUTH",
    default_uri: str | None = None,
    password: str | None = None,
    ha1_hex: str | None = None,
    realm: str | None = None,
) -> bool:
    """Check the digest response of `creds`; give exactly one of `password` and `ha1_hex`.

    With a password, HA1 is computed over `creds.realm`. Pass `realm` to also require that the
    client answered the challenge of that realm (as Kamailio's auth module does): credentials
    for another realm then verify False.

    Returns:
        True when the response matches (constant-time compare), False otherwise.

    Raises:
        ValueError: both or neither of password / ha1_hex (a programming error).
        LocalProtocolError: unusable credentials (see response_for).
    """
    if ha1_hex is None:
        if password is None:
            raise ValueError("give exactly one of password and ha1_hex")
        ha1_hex = ha1(creds.username, creds.realm, password)
    elif password is not None:
        raise ValueError("give exactly one of password and ha1_hex")
    expected = response_for(creds, ha1_hex, method, default_uri).encode("ascii")
    given = creds.response.lower().encode("utf-8", "surrogateescape")
    matches = hmac.compare_digest(expected, given)
    return matches and (realm is None or creds.realm == realm)


def uri_matches(creds: Credentials, to_path_uri: str) -> bool:
    """Whether the digest names `to_path_uri`: True when `uri=` is absent, else exact equality
    after stripping whitespace (RFC 4976 §9.1; Kamailio never checks this)."""
    return creds.uri is None or creds.uri.strip() == to_path_uri.strip()


def nc_value(creds: Credentials) -> int | None:
    """The nonce count as an integer, or None when `nc` is absent.

    Raises:
        LocalProtocolError: `nc` is not exactly 8 hex digits (RFC 2617 §3.2.2).
    """
    if creds.nc is None:
        return None
    if _NC_RE.fullmatch(creds.nc) is None:
        raise _bad(f"malformed nc {creds.nc!r}")
    return int(creds.nc, 16)


def _nonce_mac(secret: bytes, stamp: bytes) -> bytes:
    if not secret:
        raise ValueError("the nonce secret must not be empty")
    return hmac.digest(secret, stamp, "sha256")[:_NONCE_MAC_SIZE]


def make_nonce(secret: bytes, now: float, salt: bytes = bytes(_NONCE_SALT_SIZE)) -> str:
    """A stateless nonce: url-safe base64 of 8-byte big-endian whole seconds, a 4-byte salt
    and a 12-byte HMAC-SHA256 of both under `secret`. Always 32 characters, never '"', ','
    or '='. Pass 4 random bytes as `salt` so that two challenges issued in the same second
    differ: nonce counts, and so replay detection, are per nonce (RFC 2617 §3.2.2)."""
    if now < 0:
        raise ValueError("now must not be negative")
    if len(salt) != _NONCE_SALT_SIZE:
        raise ValueError(f"the salt must be {_NONCE_SALT_SIZE} bytes")
    stamp = _NONCE_TIME.pack(int(now)) + salt
    return base64.urlsafe_b64encode(stamp + _nonce_mac(secret, stamp)).decode("ascii")


def _nonce_bytes(nonce: str) -> bytes | None:
    # Exactly 32 url-safe characters decode to exactly 24 bytes with no padding and no
    # ignored bits; b64decode alone would skip stray characters.
    if _NONCE_RE.fullmatch(nonce) is None:
        return None
    return base64.urlsafe_b64decode(nonce)


def nonce_time(nonce: str) -> int | None:
    """The issue time in a nonce made by make_nonce (MAC not checked), or None if undecodable."""
    raw = _nonce_bytes(nonce)
    if raw is None:
        return None
    return int(_NONCE_TIME.unpack_from(raw)[0])


def check_nonce(secret: bytes, nonce: str, now: float, ttl: float) -> NonceState:
    """Classify a nonce made by make_nonce under `secret`.

    Returns:
        INVALID when it does not decode, its MAC does not match, or it was issued more than
        5 s in the future; STALE when older than `ttl` seconds (answer 401 with stale=true,
        RFC 4976 §10.3); VALID otherwise.
    """
    raw = _nonce_bytes(nonce)
    if raw is None:
        return NonceState.INVALID
    cut = _NONCE_TIME.size + _NONCE_SALT_SIZE
    stamp, mac = raw[:cut], raw[cut:]
    if not hmac.compare_digest(mac, _nonce_mac(secret, stamp)):
        return NonceState.INVALID
    issued = _NONCE_TIME.unpack_from(stamp)[0]
    if issued - now > _NONCE_MAX_SKEW:
        return NonceState.INVALID
    if now - issued > ttl:
        return NonceState.STALE
    return NonceState.VALID
