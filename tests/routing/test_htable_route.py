"""The htable route's own behaviour: what it keeps in the shared table, and for how long."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import HTable

from .fakeenv import NOW, SOCK, Client, FakeEnv, Relay, request

pytestmark = pytest.mark.usefixtures("both_loaders")  # compiled and exec'd alike

ALICE = Client("alice", 40001, conid=0x1001)
BOB = Client("bob", 40002, conid=0x1002)


def sessid(use_path: str) -> str:
    return use_path.rsplit("/", 1)[1].removesuffix(";tcp")


def test_auth_stores_address_and_socket_for_the_granted_time_plus_5(env: FakeEnv) -> None:
    relay = Relay("htable", env)
    reply = relay.auth(BOB, expires="1900")
    assert reply.code == 200
    use_path = reply.header("Use-Path")
    assert use_path is not None
    sid = sessid(use_path.decode())
    assert env.ht is not None
    assert env.ht.lookup("msrp", f"{sid}::srcaddr", NOW) == ("msrp://127.0.0.1:40002", NOW + 1905)
    assert env.ht.lookup("msrp", f"{sid}::srcsock", NOW) == (SOCK, NOW + 1905)
    assert [d["key"] for d in env.ht.dump("msrp", NOW)] == [f"{sid}::srcaddr", f"{sid}::srcsock"]
    assert env.cmap is not None and env.cmap.count() == 0  # this route does not use the cmap


def test_session_ids_are_random_and_distinct(env: FakeEnv) -> None:
    relay = Relay("htable", env)
    sids = {sessid(relay.session(BOB)) for _ in range(5)}
    assert len(sids) == 5
    assert all(len(s) == 16 for s in sids)  # 96 bits, url-safe base64


def test_an_expired_session_is_unknown(env: FakeEnv) -> None:
    relay = Relay("htable", env)
    bob_path = relay.session(BOB)  # no Expires: 3600, stored for 3605 s
    send = request("SEND", "t9", f"{bob_path} {BOB.uri}", ALICE.uri)
    env.clock = NOW + 3605
    replies, relayed = relay.feed(ALICE, send)
    assert [r.code for r in replies] == [200] and len(relayed) == 1
    env.clock = NOW + 3605.5
    replies, relayed = relay.feed(ALICE, send)
    assert [r.code for r in replies] == [481] and relayed == []


@pytest.fixture
def tiny(prefix: str, tmp_path: Path) -> Iterator[HTable]:
    h = HTable.create(f"{prefix}-tiny", tmp_path / "tiny.lock", 1, 1)  # room for one item
    try:
        yield h
    finally:
        h.close()
        h.unlink()


def test_a_full_table_refuses_the_session_cleanly(env: FakeEnv, tiny: HTable) -> None:
    env.ht = tiny
    reply = Relay("htable", env).auth(BOB)
    assert (reply.code, reply.reason) == (500, b"Server Error")
    assert tiny.dump("msrp", env.clock) == []  # the half-stored session was removed
