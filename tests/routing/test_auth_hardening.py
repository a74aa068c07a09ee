"""Digest hardening in the script API: per-challenge nonces, nc replay refused across the
shared htable, opaque checked when echoed (RFC 2617 §3.2.1-§3.2.2, RFC 4976 §9.1)."""

from __future__ import annotations

from msrpd.protocol import digest as dg

from .fakeenv import PASSWORDS, REALM, RELAY, Client, FakeEnv, Relay, auth_frame, authorization

ALICE = Client("alice", 40001, conid=0x1001)


def _challenge(relay: Relay) -> str:
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE))
    value = replies[0].header("WWW-Authenticate")
    assert replies[0].code == 401 and value is not None
    return value.decode()


def test_two_challenges_in_one_second_have_different_nonces(env: FakeEnv) -> None:
    relay = Relay("cmap", env)  # env.clock is fixed: same second
    first, second = _challenge(relay), _challenge(relay)
    assert first != second
    assert 'opaque="' in first and "stale" not in first


def test_a_replayed_authorization_is_refused_as_stale(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    header = authorization("alice", _challenge(relay))
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert replies[0].code == 200
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert replies[0].code == 401
    assert b"stale=true" in (replies[0].header("WWW-Authenticate") or b"")


def test_a_higher_nonce_count_on_the_same_nonce_is_accepted(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    challenge = _challenge(relay)
    first = authorization("alice", challenge)
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=first))
    assert replies[0].code == 200
    # nc=00000002 needs a new response digest (no uri parameter: the To-Path URI is used).
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    creds = dg.Credentials("alice", REALM, nonce, None, "", "auth", "00000002", "c2")
    response = dg.response_for(creds, dg.ha1("alice", REALM, PASSWORDS["alice"]), uri=RELAY)
    second = (
        f'Digest username="alice", realm="myrealm", nonce="{nonce}", '
        f'response="{response}", qop=auth, nc=00000002, cnonce="c2"'
    )
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=second))
    assert replies[0].code == 200


def test_a_changed_opaque_is_refused(env: FakeEnv) -> None:
    relay = Relay("cmap", env)
    header = authorization("alice", _challenge(relay)) + ', opaque="0000"'
    replies, _ = relay.feed(ALICE, auth_frame(relay.tid(), ALICE, authorization=header))
    assert replies[0].code == 401
