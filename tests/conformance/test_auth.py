"""AUTH at the relay route (rfc-checklist §6 cases 9-12, 14, 15, 30c; RFC 4976 §5.1, §6.3,
§9.1): digest over TLS only, the Use-Path token, Expires bounds, Authentication-Info."""

from __future__ import annotations

import re

from msrpd.protocol import Frame
from msrpd.protocol import digest as dg

from ..integration.relay import PASSWORDS, REALM
from ..msrpclient import MsrpClient, new_tid
from .conftest import FQDN, MAX_EXPIRES, MIN_EXPIRES, Net
from .util import answer_of, nothing_more

CNONCE = "0a4f113b"


def _nonce(challenge: Frame) -> str:
    found = re.search(r'nonce="([^"]+)"', (challenge.header("WWW-Authenticate") or b"").decode())
    assert found, challenge.buf
    return found[1]


def _authorization(
    to: str, nonce: str, user: str = "alice", password: str | None = None, nc: int = 1
) -> tuple[str, str]:
    """(Authorization value without a `uri` parameter, the rspauth the relay must send)."""
    ha1 = dg.ha1(user, REALM, password or PASSWORDS[user])
    creds = dg.Credentials(user, REALM, nonce, None, "", "auth", f"{nc:08x}", CNONCE)
    response = dg.response_for(creds, ha1, "AUTH", to)
    value = (
        f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", response="{response}", '
        f'qop=auth, nc={nc:08x}, cnonce="{CNONCE}"'
    )
    return value, dg.rspauth(creds, ha1, to)


def _challenge(client: MsrpClient, to: str) -> Frame:
    tid = client.request("AUTH", to)
    got = answer_of(client, tid).frame
    assert got.code == 401, got.buf
    return got


def test_case9_auth_without_credentials_is_challenged(net: Net) -> None:
    """Case 9: `To-Path: msrps://relay.example.net;tcp` (no port, RFC 4976 §8) is us: 401
    with A's transaction id, To-Path A, From-Path the URI as addressed, a Digest challenge
    with qop="auth" and nothing else RFC 4976 §9.1 rules out; end-line `$`."""
    to = f"msrps://{FQDN};tcp"
    with net.client() as a:
        tid = a.request("AUTH", to)
        got = answer_of(a, tid).frame
        assert got.code == 401
        assert got.to_path == [a.uri] and got.from_path == [to]
        challenge = (got.header("WWW-Authenticate") or b"").decode()
        assert challenge.startswith("Digest ")
        assert f'realm="{REALM}"' in challenge and 'nonce="' in challenge
        assert 'qop="auth"' in challenge
        for banned in ("auth-int", "MD5-sess", "domain="):
            assert banned not in challenge
        assert bytes(got.buf).endswith(b"-------" + tid + b"$\r\n")


def test_case10_digest_success_gets_a_token_and_authentication_info(net: Net) -> None:
    """Case 10: a valid digest (no `uri`: H(A2) over the To-Path URI) gets 200 with
    `Use-Path: msrps://relay.example.net:<port>/<sid>;tcp` (a name and a port, a session id
    of 16 characters), `Expires`, and Authentication-Info with rspauth, cnonce, nc and an
    unquoted qop (RFC 4976 §9.1)."""
    to = f"msrps://{FQDN};tcp"
    with net.client() as a:
        value, rspauth = _authorization(to, _nonce(_challenge(a, to)))
        tid = a.request("AUTH", to, [("Authorization", value)])
        got = answer_of(a, tid).frame
        assert got.code == 200, got.buf
        use_path = (got.header("Use-Path") or b"").decode()
        found = re.fullmatch(rf"msrps://{FQDN}:{net.tls_port}/([A-Za-z0-9_-]{{16}});tcp", use_path)
        assert found, use_path
        assert got.header("Expires") == str(MAX_EXPIRES).encode()
        info = (got.header("Authentication-Info") or b"").decode()
        assert f'rspauth="{rspauth}"' in info
        assert f'cnonce="{CNONCE}"' in info and "nc=00000001" in info
        assert re.search(r"(^|[ ,])qop=auth($|,)", info), info


def test_case11a_wrong_passwords_get_401_without_stale(net: Net) -> None:
    """Case 11(a): three wrong passwords: a fresh challenge each time, never stale=true (the
    close after the third is the abuse limits' part of issue 14)."""
    to = net.bare
    with net.client() as a:
        nonce = _nonce(_challenge(a, to))
        for nc in (1, 2, 3):
            value, _ = _authorization(to, nonce, password="wrong", nc=nc)
            tid = a.request("AUTH", to, [("Authorization", value)])
            got = answer_of(a, tid).frame
            assert got.code == 401
            assert b"stale" not in (got.header("WWW-Authenticate") or b"")
            assert got.header("Use-Path") is None
            nonce = _nonce(got)


def test_case11b_a_replayed_nonce_count_is_stale_not_a_failure(net: Net) -> None:
    """Case 11(b), live: the same credentials twice (a nonce count not above the last) are
    answered like a stale nonce, 401 with stale=true, and a retry on the new nonce works.
    (A nonce past its 5 minutes gets the same answer: tests/routing/test_auth_hardening.py
    and the digest unit tests; a live test would wait 5 minutes.)"""
    to = net.bare
    with net.client() as a:
        value, _ = _authorization(to, _nonce(_challenge(a, to)))
        tid = a.request("AUTH", to, [("Authorization", value)])
        assert answer_of(a, tid).frame.code == 200
        tid = a.request("AUTH", to, [("Authorization", value)])
        got = answer_of(a, tid).frame
        assert got.code == 401
        assert b"stale=true" in (got.header("WWW-Authenticate") or b"")
        value, _ = _authorization(to, _nonce(got))
        tid = a.request("AUTH", to, [("Authorization", value)])
        assert answer_of(a, tid).frame.code == 200


def test_case12_expires_bounds(net: Net) -> None:
    """Case 12: Expires below the minimum: 423 with Min-Expires; above the maximum: 423 with
    Max-Expires; absent: 200 with the default (the maximum)."""
    to = net.bare
    with net.client() as a:
        nonce = _nonce(_challenge(a, to))
        cases = [
            (str(MIN_EXPIRES - 1), 423, ("Min-Expires", MIN_EXPIRES)),
            (str(MAX_EXPIRES + 1), 423, ("Max-Expires", MAX_EXPIRES)),
            (None, 200, ("Expires", MAX_EXPIRES)),
        ]
        for nc, (expires, code, header) in enumerate(cases, 1):
            value, _ = _authorization(to, nonce, nc=nc)
            extra = [("Authorization", value)]
            if expires is not None:
                extra.append(("Expires", expires))
            tid = a.request("AUTH", to, extra)
            got = answer_of(a, tid).frame
            assert got.code == code, got.buf
            assert got.header(header[0]) == str(header[1]).encode()
            assert (got.header("Use-Path") is None) == (code != 200)


def test_case14a_auth_over_plain_tcp_is_refused(net: Net) -> None:
    """Case 14(a): AUTH over TCP gets no token: 403 (policy), with or without credentials."""
    to = f"msrp://127.0.0.1:{net.port};tcp"
    with net.plain() as a:
        tid = a.request("AUTH", to)
        got = answer_of(a, tid).frame
        assert got.code == 403 and got.header("WWW-Authenticate") is None
        value, _ = _authorization(to, "A" * 32)
        tid = a.request("AUTH", to, [("Authorization", value)])
        got = answer_of(a, tid).frame
        assert got.code == 403 and got.header("Use-Path") is None
        nothing_more(a)


def test_case14b_basic_credentials_get_a_digest_challenge(net: Net) -> None:
    with net.client() as a:
        tid = a.request("AUTH", net.bare, [("Authorization", "Basic YWxpY2U6YWxpY2Utc2VjcmV0")])
        got = answer_of(a, tid).frame
        assert got.code == 401 and got.header("Use-Path") is None
        assert (got.header("WWW-Authenticate") or b"").startswith(b"Digest ")


def test_case15_ten_thousand_auths_get_ten_thousand_tokens(net: Net) -> None:
    """Case 15: 10 000 successful AUTHs (100 connections, 100 pipelined AUTHs each on one
    nonce, counting nc up): every Use-Path is new, each session id 16 characters of
    base64url (96 random bits)."""
    to = net.bare
    seen: set[str] = set()
    for i in range(100):
        user = ("alice", "bob")[i % 2]
        with net.client() as a:
            nonce = _nonce(_challenge(a, to))
            tids = []
            for nc in range(1, 101):
                value, _ = _authorization(to, nonce, user, nc=nc)
                tids.append(a.request("AUTH", to, [("Authorization", value)]))
            for tid in tids:
                got = answer_of(a, tid).frame
                assert got.code == 200, got.buf
                sid = (got.header("Use-Path") or b"").decode().rsplit("/", 1)[1]
                assert re.fullmatch(r"[A-Za-z0-9_-]{16};tcp", sid), sid
                seen.add(sid)
    assert len(seen) == 10_000


def test_case30c_an_auth_body_over_10240_bytes_gets_400(net: Net) -> None:
    """Case 30(c): a non-SEND body is at most 10240 bytes (RFC 4975 §7.1): an AUTH with an
    11 000-byte body gets 400 and no Use-Path."""
    with net.client() as a:
        tid = new_tid()
        a.send_raw(
            f"MSRP {tid.decode()} AUTH\r\nTo-Path: {net.bare}\r\nFrom-Path: {a.uri}\r\n"
            "Content-Type: text/plain\r\n\r\n".encode()
            + b"z" * 11000
            + b"\r\n-------"
            + tid
            + b"$\r\n"
        )
        got = answer_of(a, tid).frame
        assert got.code == 400 and got.header("Use-Path") is None
