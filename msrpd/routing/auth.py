"""Digest authentication of AUTH requests for the script API (RFC 4976 §9.1, RFC 2617).

Rules:
- Nonces are stateless (digest.make_nonce: a time stamp and an HMAC under a secret every
  worker shares), so a 401 from one worker and the retry on another agree, across reloads too.
- The `uri` parameter is optional (the AG Projects msrplib client omits it); when given it
  must name the To-Path URI the AUTH was sent to (RFC 4976 §9.1; Kamailio never checks it).
- A stale nonce is not a wrong password: the next challenge says stale=true (RFC 2617 §3.2.1).
- Replays are refused across workers: the highest nonce count seen for each nonce is kept in
  the shared htable (table NONCE_TABLE, for as long as a nonce lives), and a count that is not
  higher is answered like a stale nonce (RFC 2617 §3.2.2: nc lets the server detect replays;
  Kamailio's auth module refuses them too with nonce_count=1, with a plain 401).
- The challenge carries an opaque value (RFC 2617 §3.2.1), an HMAC of the shared secret, so it
  is the same from every worker. A client that sends it back must send it unchanged; one that
  leaves it out is accepted, as Kamailio accepts it.
"""

from __future__ import annotations

import hmac
from enum import Enum

from ..protocol import Frame, LocalProtocolError
from ..protocol import digest as dg
from ..shm import NONCE_TABLE
from .env import RouteEnv

__all__ = ["AuthResult", "challenge_header", "check", "info_header", "opaque"]


class AuthResult(Enum):
    OK = "ok"
    NO_CREDENTIALS = "no credentials"
    MALFORMED = "malformed credentials"
    STALE = "stale nonce"
    REPLAY = "nonce count replayed"
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
    to_uri = frame.to_path[0] if frame.to_path else ""
    problem = _challenge_problem(creds, env, realm) or (
        None if dg.uri_matches(creds, to_uri) else AuthResult.WRONG_URI
    )
    if problem is not None:
        return problem
    if password is not None:
        ha1 = dg.ha1(creds.username, creds.realm, password)
    else:
        found = env.user_ha1(creds.username, realm)
        if found is None:
            return AuthResult.UNKNOWN_USER
        ha1 = found
    try:
        ok = dg.verify(creds, method="AUTH", default_uri=to_uri, ha1_hex=ha1)
        count = dg.nc_value(creds)
    except LocalProtocolError:
        return AuthResult.MALFORMED
    if not ok:
        return AuthResult.WRONG_PASSWORD
    return AuthResult.OK if _fresh_count(env, creds.nonce, count) else AuthResult.REPLAY


def _fresh_count(env: RouteEnv, nonce: str, count: int | None) -> bool:
    """Record `count` for `nonce`; False when it is not above the highest seen (a replay).
    Without qop there is no count: the nonce may then be used once."""
    seen = env.htable.get(NONCE_TABLE, nonce)
    value = 0 if count is None else count
    if isinstance(seen, int) and value <= seen:
        return False
    env.htable.set(NONCE_TABLE, nonce, value)
    return True


def _challenge_problem(creds: dg.Credentials, env: RouteEnv, realm: str) -> AuthResult | None:
    """Whether the credentials answer a challenge of ours that is still valid."""
    if creds.realm != realm:
        return AuthResult.WRONG_REALM
    if creds.opaque is not None and creds.opaque != opaque(env.nonce_secret):
        return AuthResult.BAD_NONCE
    state = dg.check_nonce(env.nonce_secret, creds.nonce, env.now(), env.policy.nonce_ttl)
    if state is dg.NonceState.INVALID:
        return AuthResult.BAD_NONCE
    if state is dg.NonceState.STALE:
        return AuthResult.STALE
    return None


def opaque(secret: bytes) -> str:
    return hmac.digest(secret, b"msrpd opaque", "sha256")[:12].hex()


def challenge_header(env: RouteEnv, realm: str, *, stale: bool = False) -> str:
    """`WWW-Authenticate: Digest ...` with CRLF, ready for reply()'s hdrs."""
    secret = env.nonce_secret
    nonce = dg.make_nonce(secret, env.now(), env.nonce_salt())
    value = dg.challenge(realm, nonce, opaque=opaque(secret), stale=stale)
    return f"WWW-Authenticate: {value}\r\n"


def info_header(frame: Frame, env: RouteEnv, realm: str, password: str | None) -> str:
    """`Authentication-Info` with CRLF for the 200 to an AUTH that check() passed: rspauth,
    cnonce, nc and qop (RFC 4976 §9.1 MUST; Kamailio sends none, K10). "" when the
    credentials carry no qop (RFC 2069 form: nothing to prove with) or cannot be read."""
    value = frame.header("Authorization")
    try:
        creds = dg.parse_authorization(value or b"")
    except LocalProtocolError:
        return ""
    if creds.qop is None or creds.nc is None or creds.cnonce is None:
        return ""
    ha1 = (
        dg.ha1(creds.username, creds.realm, password)
        if password is not None
        else env.user_ha1(creds.username, realm)
    )
    if ha1 is None:
        return ""
    to_uri = frame.to_path[0] if frame.to_path else ""
    try:
        rspauth = dg.rspauth(creds, ha1, to_uri)
    except LocalProtocolError:
        return ""
    # The cnonce goes back quoted as it came (RFC 2617 quoted-string: \\ and \" escaped).
    cnonce = creds.cnonce.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'Authentication-Info: rspauth="{rspauth}", cnonce="{cnonce}", '
        f"nc={creds.nc}, qop={creds.qop}\r\n"
    )
