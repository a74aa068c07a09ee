"""Digest authentication of AUTH requests for the script API (RFC 4976 §9.1, RFC 2617).

Rules:
- Nonces are stateless (digest.make_nonce: a time stamp and an HMAC under a secret every
  worker shares), so a 401 from one worker and the retry on another agree, across reloads too.
- The `uri` parameter is optional (the AG Projects msrplib client omits it); when given it
  must name the To-Path URI the AUTH was sent to (RFC 4976 §9.1; Kamailio never checks it).
- A stale nonce is not a wrong password: the next challenge says stale=true (RFC 2617 §3.2.1).
"""

from __future__ import annotations

from enum import Enum

from ..protocol import Frame, LocalProtocolError
from ..protocol import digest as dg
from .env import RouteEnv

__all__ = ["AuthResult", "challenge_header", "check"]


class AuthResult(Enum):
    OK = "ok"
    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    STALE = "stale nonce"
    BAD_NONCE = "nonce not ours"
    WRONG_REALM = "wrong realm"
    WRONG_URI = "uri is not the To-Path URI"
    UNKNOWN_USER = "unknown user"
    WRONG_PASSWORD = "wrong password"


def check(frame: Frame, env: RouteEnv, realm: str, password: str | None) -> AuthResult:
    """Verify the Authorization header of `frame` for `realm`."""
    value = frame.header("Authorization")
    if value is None:
        return AuthResult.NO_CREDENTIALS
    try:
        creds = dg.parse_authorization(value)
    except LocalProtocolError:
        return AuthResult.MALFORMED
    if creds.realm != realm:
        return AuthResult.WRONG_REALM
    state = dg.check_nonce(env.nonce_secret, creds.nonce, env.now(), env.policy.nonce_ttl)
    if state is dg.NonceState.INVALID:
        return AuthResult.BAD_NONCE
    if state is dg.NonceState.STALE:
        return AuthResult.STALE
    to_uri = frame.to_path[0] if frame.to_path else ""
    if not dg.uri_matches(creds, to_uri):
        return AuthResult.WRONG_URI
    secret = {"password": password} if password is not None else None
    if secret is None:
        ha1 = env.user_ha1(creds.username, realm)
        if ha1 is None:
            return AuthResult.UNKNOWN_USER
        secret = {"ha1_hex": ha1}
    try:
        ok = dg.verify(creds, method="AUTH", default_uri=to_uri, **secret)
    except LocalProtocolError:
        return AuthResult.MALFORMED
    return AuthResult.OK if ok else AuthResult.WRONG_PASSWORD


def challenge_header(env: RouteEnv, realm: str, *, stale: bool = False) -> str:
    """`WWW-Authenticate: Digest ...` with CRLF, ready for reply()'s hdrs."""
    nonce = dg.make_nonce(env.nonce_secret, env.now())
    return f"WWW-Authenticate: {dg.challenge(realm, nonce, stale=stale)}\r\n"
