"""Both shipped routes (cmap.py, htable.py) driven with real frames through load_route + Msrp.

Each scenario mirrors one of the oracle's golden transcripts (../shared/oracle/golden/<route>/);
where the two routes differ on purpose (reason phrases, Expires: abc) the test says which and
why.
"""

from __future__ import annotations

import re

import pytest

from msrpd.routing import SendFlags

from .fakeenv import RELAY, SOCK, Client, FakeEnv, Relay, auth_frame, request

pytestmark = pytest.mark.usefixtures("both_loaders")  # compiled and exec'd alike

BOTH = ["cmap", "htable"]
BOTH_HT = BOTH
# Both routes answer with the RFC 4975 §10 phrase (Kamailio's cmap writes "Out Of Bounds").
REASON_423 = {"cmap": b"Interval Out-of-Bounds", "htable": b"Interval Out-of-Bounds"}
USE_PATH = re.compile(r"msrp://127\.0\.0\.1:2855/[A-Za-z0-9_-]{16};tcp")

ALICE = Client("alice", 40001, conid=0x1001)
BOB = Client("bob", 40002, conid=0x1002)


def make(route: str, env: FakeEnv) -> Relay:
    return Relay(route, env)


@pytest.mark.parametrize("route", BOTH)
def test_auth_without_credentials_gets_a_digest_challenge(route: str, env: FakeEnv) -> None:
    relay = make(route, env)
    replies, relayed = relay.feed(ALICE, auth_frame("t1", ALICE))
    assert relayed == []
    [reply] = replies
    assert (reply.tid, reply.code, reply.reason) == (b"t1", 401, b"Unauthorized")
    assert reply.to_path == [ALICE.uri]
    assert reply.from_path == [RELAY]
    challenge = reply.header("WWW-Authenticate")
    assert challenge is not None
    assert re.match(rb'Digest realm="myrealm", nonce="[A-Za-z0-9_-]{32}", ', challenge)
    assert challenge.endswith(b'qop="auth"')
    assert env.sessions == []


@pytest.mark.parametrize("route", BOTH)
def test_auth_with_a_wrong_password_is_challenged_again(route: str, env: FakeEnv) -> None:
    reply = make(route, env).auth(ALICE, password="not-xyz123")
    assert reply.code == 401
    assert reply.header("WWW-Authenticate") is not None


STORE_CASES = [
    (True, "dave-pw", 200),
    (True, "xyz123", 401),
    (False, "xyz123", 200),
    (False, "dave-pw", 401),
]


@pytest.mark.parametrize(
    ("route", "store", "password", "code"),
    [pytest.param(route, *case) for route in BOTH for case in STORE_CASES],
)
def test_the_user_store_decides_once_there_is_one(
    route: str, env: FakeEnv, store: bool, password: str, code: int
) -> None:
    # As in the Kamailio examples every password is "xyz123" until [auth] users is set.
    env.has_user_store = store
    reply = make(route, env).auth(Client("dave", 40004, conid=0x1004), password=password)
    assert reply.code == code


@pytest.mark.parametrize("route", BOTH_HT)
def test_auth_with_good_credentials_gets_use_path_and_expires(route: str, env: FakeEnv) -> None:
    reply = make(route, env).auth(ALICE)
    assert (reply.code, reply.reason) == (200, b"OK")
    use_path = reply.header("Use-Path")
    assert use_path is not None and USE_PATH.fullmatch(use_path.decode())
    assert reply.header("Expires") == b"3600"
    assert reply.to_path == [ALICE.uri]


@pytest.mark.parametrize("route", BOTH)
@pytest.mark.parametrize(
    ("expires", "header", "bound"),
    [
        ("1799", "Min-Expires", b"1800"),
        ("0", "Min-Expires", b"1800"),
        ("3601", "Max-Expires", b"3600"),
    ],
)
def test_expires_out_of_bounds_gets_423(
    route: str, env: FakeEnv, expires: str, header: str, bound: bytes
) -> None:
    reply = make(route, env).auth(ALICE, expires=expires)
    assert (reply.code, reply.reason) == (423, REASON_423[route])
    assert reply.header(header) == bound
    other = "Max-Expires" if header == "Min-Expires" else "Min-Expires"
    assert reply.header(other) is None
    assert reply.header("Use-Path") is None
    assert env.cmap is not None and env.ht is not None
    assert env.cmap.count() == len(env.ht.dump("msrp", env.clock)) == 0  # nothing stored


@pytest.mark.parametrize("route", BOTH_HT)
@pytest.mark.parametrize("expires", ["1800", "1900", "3600"])
def test_expires_within_bounds_is_granted_and_echoed(
    route: str, env: FakeEnv, expires: str
) -> None:
    reply = make(route, env).auth(ALICE, expires=expires)
    assert reply.code == 200
    assert reply.header("Expires") == expires.encode()


@pytest.mark.parametrize("route", BOTH)
def test_expires_that_is_not_a_number(route: str, env: FakeEnv) -> None:
    reply = make(route, env).auth(ALICE, expires="abc")
    if route == "cmap":
        # cmapops follows RFC 4976 §7 (Expires is 1*DIGIT): a malformed request.
        assert reply.code == 400
    else:
        # The script's (int) cast makes "abc" 0, as Kamailio does (golden auth_expires_invalid).
        assert (reply.code, reply.header("Min-Expires")) == (423, b"1800")


@pytest.mark.parametrize("route", BOTH_HT)
def test_send_to_a_known_session_is_answered_and_relayed(route: str, env: FakeEnv) -> None:
    relay = make(route, env)
    bob_path = relay.session(BOB)
    data = request("SEND", "t9", f"{bob_path} {BOB.uri}", ALICE.uri, b"Hello Bob")
    replies, relayed = relay.feed(ALICE, data)
    assert [(r.code, r.reason, r.to_path) for r in replies] == [(200, b"OK", [ALICE.uri])]
    [out] = relayed
    assert out.flags & SendFlags.REUSE_ONLY  # msrp_relay_flags("1"): the session's connection
    assert out.frame.to_path == [BOB.uri]
    assert out.frame.from_path == [bob_path, ALICE.uri]
    assert bytes(out.frame.body or b"") == b"Hello Bob"
    if route == "cmap":
        assert (out.dest.conid, out.dest.sock) == (BOB.conid, SOCK)
    else:
        assert out.dest.uri is not None
        assert (out.dest.uri.host, out.dest.uri.port, out.dest.sock) == (
            "127.0.0.1",
            BOB.port,
            SOCK,
        )


@pytest.mark.parametrize("route", BOTH_HT)
@pytest.mark.parametrize(
    "first_hop", ["msrp://127.0.0.1:2855/nosuchsession;tcp", RELAY], ids=["unknown", "no-session"]
)
def test_send_to_an_unknown_session_gets_481(route: str, env: FakeEnv, first_hop: str) -> None:
    relay = make(route, env)
    relay.session(BOB)
    replies, relayed = relay.feed(ALICE, request("SEND", "t9", f"{first_hop} {BOB.uri}", ALICE.uri))
    assert [(r.code, r.reason) for r in replies] == [(481, b"Session-does-not-exist")]
    assert relayed == []


@pytest.mark.parametrize("route", BOTH_HT)
def test_report_is_never_answered(route: str, env: FakeEnv) -> None:
    relay = make(route, env)
    unknown = request("REPORT", "t8", f"msrp://127.0.0.1:2855/nosuch;tcp {BOB.uri}", ALICE.uri)
    assert relay.feed(ALICE, unknown) == ([], [])
    bob_path = relay.session(BOB)
    replies, relayed = relay.feed(
        ALICE, request("REPORT", "t9", f"{bob_path} {BOB.uri}", ALICE.uri)
    )
    assert replies == []
    assert [r.frame.method for r in relayed] == [b"REPORT"]
    many = request("REPORT", "t10", f"{RELAY} msrp://192.0.2.7:2855/x;tcp {BOB.uri}", ALICE.uri)
    replies, relayed = relay.feed(ALICE, many)
    assert replies == [] and len(relayed) == 1


@pytest.mark.parametrize("route", BOTH)
def test_other_methods_get_501(route: str, env: FakeEnv) -> None:
    data = request("FOO", "t1", f"{RELAY} {BOB.uri}", ALICE.uri)
    replies, relayed = make(route, env).feed(ALICE, data)
    assert [(r.code, r.reason) for r in replies] == [(501, b"Request-method-not-understood")]
    assert replies[0].message_id == b"m1"
    assert relayed == []


@pytest.mark.parametrize("route", BOTH)
def test_responses_are_relayed_along_to_path(route: str, env: FakeEnv) -> None:
    relay = make(route, env)
    data = (
        f"MSRP r1 200 OK\r\nTo-Path: {RELAY} {ALICE.uri}\r\nFrom-Path: {BOB.uri}\r\n-------r1$\r\n"
    )
    replies, relayed = relay.feed(BOB, data.encode())
    assert replies == []
    [out] = relayed
    assert (out.frame.code, out.frame.to_path, out.frame.from_path) == (
        200,
        [ALICE.uri],
        [RELAY, BOB.uri],
    )
    assert out.dest.uri is not None and out.dest.uri.port == ALICE.port
    # A response whose To-Path is only the relay has nowhere to go: nothing is sent.
    lone = f"MSRP r2 200 OK\r\nTo-Path: {RELAY}\r\nFrom-Path: {BOB.uri}\r\n-------r2$\r\n"
    assert relay.feed(BOB, lone.encode()) == ([], [])


@pytest.mark.parametrize("route", BOTH)
def test_auth_for_a_next_hop_is_relayed_not_answered(route: str, env: FakeEnv) -> None:
    data = auth_frame("t1", ALICE, to_path=f"{RELAY} msrp://127.0.0.1:9/x;tcp")
    replies, relayed = make(route, env).feed(ALICE, data)
    assert replies == []
    [out] = relayed
    assert out.frame.method == b"AUTH"
    assert out.frame.to_path == ["msrp://127.0.0.1:9/x;tcp"]
    assert out.frame.from_path == [RELAY, ALICE.uri]


@pytest.mark.parametrize("route", BOTH)
def test_send_with_more_hops_is_answered_and_relayed_along_to_path(
    route: str, env: FakeEnv
) -> None:
    data = request("SEND", "t1", f"{RELAY} msrp://192.0.2.7:2855/x;tcp {BOB.uri}", ALICE.uri)
    replies, relayed = make(route, env).feed(ALICE, data)
    assert [r.code for r in replies] == [200]
    [out] = relayed
    assert out.dest.uri is not None and (out.dest.uri.host, out.dest.uri.port) == (
        "192.0.2.7",
        2855,
    )
    assert out.frame.to_path == ["msrp://192.0.2.7:2855/x;tcp", BOB.uri]


@pytest.mark.parametrize("route", BOTH_HT)
def test_use_path_names_the_listener_the_auth_came_on(route: str, env: FakeEnv) -> None:
    tls_client = Client("carol", 40003, conid=0x1003, sock="tls:[::1]:2856")
    use_path = make(route, env).session(tls_client)
    assert re.fullmatch(r"msrps://\[::1\]:2856/[A-Za-z0-9_-]{16};tcp", use_path)
