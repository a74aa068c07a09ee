"""The relay route (routes/relay.py) through the real Msrp object and an in-memory env:
each branch of rfc-checklist §2.1, Failure-Report on every answer (§2.4), direction by the
arriving connection, expiry on the env's clock (a nonce's 5 minutes, a token's Expires).
The same route against a live msrpd: tests/conformance/."""

from __future__ import annotations

import dataclasses

import pytest

from msrpd.config.address import parse_listen
from msrpd.config.selfuri import SelfUris
from msrpd.protocol import digest as dg

from .fakeenv import (
    PASSWORDS,
    REALM,
    RELAY,
    Client,
    FakeEnv,
    Relay,
    auth_frame,
    authorization,
    request,
)

pytestmark = pytest.mark.usefixtures("both_loaders")  # compiled and exec'd alike

ALICE = Client("alice", 40001, conid=1, sock="tls:127.0.0.1:2855")
BOB = Client("bob", 40002, conid=2, sock="tls:127.0.0.1:2855")
PLAIN = Client("carol", 40003, conid=3)
OTHER = "msrp://127.0.0.1:7000/kb;tcp"


@pytest.fixture
def relay(env: FakeEnv) -> Relay:
    listen = [parse_listen(f"{proto}:127.0.0.1:2855") for proto in ("tcp", "tls")]
    env.self_uris = SelfUris.build(listen)
    return Relay("relay", env)


def _send(relay: Relay, client: Client, to_path: str, fr: str | None = None) -> tuple:
    data = request("SEND", relay.tid(), to_path, client.uri)
    if fr is not None:
        data = data.replace(
            b"Message-ID: m1\r\n", f"Message-ID: m1\r\nFailure-Report: {fr}\r\n".encode()
        )
    return relay.feed(client, data)


def test_a_request_not_for_us_closes_and_goes_nowhere(relay: Relay, env: FakeEnv) -> None:
    replies, relayed = _send(relay, PLAIN, f"msrp://10.0.0.1:2855/x;tcp {OTHER}")
    assert (replies, relayed) == ([], [])
    assert env.closed == ["request not addressed to this relay"]


def test_auth_over_tcp_is_403_and_over_tls_gets_a_token_with_authentication_info(
    relay: Relay, env: FakeEnv
) -> None:
    replies, _ = relay.feed(PLAIN, auth_frame(relay.tid(), PLAIN))
    assert [r.code for r in replies] == [403]
    reply = relay.auth(ALICE)
    assert reply.code == 200
    assert (reply.header("Use-Path") or b"").startswith(b"msrps://127.0.0.1:2855/")
    info = reply.header("Authentication-Info") or b""
    assert b'rspauth="' in info and b"nc=00000001" in info and b"qop=auth" in info
    assert env.sessions and env.closed == []


def test_a_nonce_past_its_lifetime_gets_stale_true_and_no_token(relay: Relay, env: FakeEnv) -> None:
    """Case 11(b): the nonce is 5 minutes old when answered: 401 stale=true."""
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE))
    challenge = (replies[0].header("WWW-Authenticate") or b"").decode()
    env.clock += env.policy.nonce_ttl + 1
    header = authorization("alice", challenge)
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert [r.code for r in replies] == [401]
    assert b"stale=true" in (replies[0].header("WWW-Authenticate") or b"")
    assert env.sessions == []


def test_direction_comes_from_the_arriving_connection(relay: Relay) -> None:
    token = relay.session(ALICE)
    replies, relayed = _send(relay, ALICE, f"{token} {OTHER}")
    assert [r.code for r in replies] == [200]
    assert len(relayed) == 1 and relayed[0].dest.conid is None
    assert relayed[0].dest.uri is not None and relayed[0].dest.uri.port == 7000
    replies, relayed = _send(relay, BOB, f"{token} {OTHER}")
    assert [r.code for r in replies] == [200]
    assert len(relayed) == 1 and relayed[0].dest.conid == ALICE.conid
    assert relayed[0].dest.uri is None


@pytest.mark.parametrize(
    ("fr", "codes"), [(None, [200]), ("yes", [200]), ("partial", []), ("no", [])]
)
def test_the_hop_by_hop_200_follows_failure_report(
    relay: Relay, fr: str | None, codes: list[int]
) -> None:
    token = relay.session(ALICE)
    replies, relayed = _send(relay, BOB, f"{token} {ALICE.uri}", fr)
    assert [r.code for r in replies] == codes
    assert len(relayed) == 1


@pytest.mark.parametrize(("fr", "codes"), [("yes", [481]), ("partial", [481]), ("no", [])])
def test_a_bad_token_gets_481_as_failure_report_allows(
    relay: Relay, fr: str, codes: list[int]
) -> None:
    replies, relayed = _send(relay, BOB, f"msrp://127.0.0.1:2855/nosuch;tcp {OTHER}", fr)
    assert ([r.code for r in replies], relayed) == (codes, [])


def test_an_expired_token_is_refused_and_deleted(relay: Relay, env: FakeEnv) -> None:
    env.policy = dataclasses.replace(env.policy, auth_min_expires=1)
    reply = relay.auth(ALICE, expires="10")
    token = (reply.header("Use-Path") or b"").decode()
    sid = token.rsplit("/", 1)[1].split(";")[0]
    assert env.cmap is not None and env.cmap.lookup(sid, env.clock) is not None
    env.clock += 11
    replies, relayed = _send(relay, BOB, f"{token} {ALICE.uri}")
    assert ([r.code for r in replies], relayed) == ([481], [])
    assert env.cmap.lookup(sid, float("-inf")) is None


def test_reports_are_never_answered(relay: Relay) -> None:
    token = relay.session(ALICE)
    data = request("REPORT", relay.tid(), f"{token} {ALICE.uri}", BOB.uri)
    replies, relayed = relay.feed(BOB, data)
    assert (replies, len(relayed)) == ([], 1)
    data = request("REPORT", relay.tid(), f"{RELAY} {ALICE.uri}", BOB.uri)
    assert relay.feed(BOB, data) == ([], [])
    data = request("REPORT", "ab1", f"{token} {ALICE.uri}", BOB.uri)
    assert relay.feed(BOB, data) == ([], [])


@pytest.mark.parametrize("block", [False, True])
def test_unknown_methods_are_forwarded_unless_blocked(
    relay: Relay, env: FakeEnv, block: bool
) -> None:
    env.policy = dataclasses.replace(env.policy, block_unknown_methods=block)
    token = relay.session(ALICE)
    replies, relayed = relay.feed(BOB, request("FOO", relay.tid(), f"{token} {ALICE.uri}", BOB.uri))
    assert [r.code for r in replies] == ([501] if block else [])
    assert len(relayed) == (0 if block else 1)


@pytest.mark.parametrize(
    ("tid", "method"), [("ab1", "SEND"), ("a" * 33, "SEND"), ("abcd", "send"), ("abcd", "FOO1")]
)
def test_what_rfc_4975_forbids_gets_400(relay: Relay, tid: str, method: str) -> None:
    token = relay.session(ALICE)
    replies, relayed = relay.feed(BOB, request(method, tid, f"{token} {ALICE.uri}", BOB.uri))
    assert ([r.code for r in replies], relayed) == ([400], [])


def test_a_token_with_no_next_hop_and_the_bare_uri_with_one(relay: Relay) -> None:
    token = relay.session(ALICE)
    replies, relayed = _send(relay, ALICE, token)
    assert ([r.code for r in replies], relayed) == ([400], [])
    replies, relayed = _send(relay, ALICE, f"{RELAY} {OTHER}")
    assert ([r.code for r in replies], relayed) == ([403], [])


def test_authentication_info_quotes_the_cnonce_back_as_it_came(relay: Relay) -> None:
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE))
    challenge = (replies[0].header("WWW-Authenticate") or b"").decode()
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    cnonce = 'a"b\\c'
    creds = dg.Credentials("alice", REALM, nonce, None, "", "auth", "00000001", cnonce)
    response = dg.response_for(creds, dg.ha1("alice", REALM, PASSWORDS["alice"]), "AUTH", RELAY)
    header = (
        f'Digest username="alice", realm="{REALM}", nonce="{nonce}", response="{response}", '
        'qop=auth, nc=00000001, cnonce="a\\"b\\\\c"'
    )
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert [r.code for r in replies] == [200]
    info = (replies[0].header("Authentication-Info") or b"").decode()
    assert 'cnonce="a\\"b\\\\c"' in info
