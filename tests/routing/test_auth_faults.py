"""Which failed AUTHs the [limits] count against the client (rfc-checklist §3.7, case 11):
wrong credentials from a client connected to us do; a stale or replayed nonce does not, nor an
AUTH another relay forwarded (its connection is not closed for its clients' failures)."""

from __future__ import annotations

from .fakeenv import Client, FakeEnv, Relay, auth_frame, authorization

ALICE = Client("alice", 40001, conid=0x1001)
FORWARDER = "msrps://r2.example.org:2855/t2;tcp"


def _challenge(relay: Relay) -> str:
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE))
    value = replies[0].header("WWW-Authenticate")
    assert replies[0].code == 401 and value is not None
    return value.decode()


def test_a_wrong_password_is_a_fault_and_no_credentials_no_check(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    header = authorization("alice", _challenge(relay), password="wrong")
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert replies[0].code == 401
    assert (env.auth_results, env.auth_faults) == ([False], [True])


def test_a_replayed_nonce_count_is_no_fault(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    header = authorization("alice", _challenge(relay))
    for expected in (200, 401, 401):
        replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
        assert replies[0].code == expected
    assert (env.auth_results, env.auth_faults) == ([True, False, False], [False] * 3)


def test_a_forwarded_auth_is_no_fault(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    header = authorization("alice", _challenge(relay), password="wrong")
    frame = auth_frame(relay.tid(), ALICE, authorization=header)
    forwarded = frame.replace(b"From-Path: ", f"From-Path: {FORWARDER} ".encode())
    replies, _ = relay.feed(ALICE, forwarded)
    assert replies[0].code == 401
    assert (env.auth_results, env.auth_faults) == ([False], [False])
