"""RemoteUsers (shm/remoteusers.py): the users' sessions on the other nodes, written whole by
the cluster agent, read by the workers; and UserSessions.live_counts, what the agent
publishes of this node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import RemoteUsers, UserSessions
from msrpd.shm.usersess import user_key

from ..forking import Children

NOW = 1_700_000_000.0


@pytest.fixture
def remote(prefix: str, tmp_path: Path) -> Iterator[RemoteUsers]:
    table = RemoteUsers.create(prefix, tmp_path / "remote.lock", 2, 8)
    try:
        yield table
    finally:
        table.close()
        table.unlink()


def test_replace_holds_exactly_the_counts_given(remote: RemoteUsers) -> None:
    long_name = "ü" * 100  # kept under its hash, as UserSessions keeps it
    counts = {user_key("alice"): 2, user_key("bob"): 1, user_key(long_name): 3}
    assert remote.replace(counts, NOW + 5) == 0
    assert [remote.sessions(u, NOW) for u in ("alice", "bob", long_name, "carol")] == [2, 1, 3, 0]
    assert remote.replace({user_key("bob"): 4}, NOW + 5) == 0  # alice's sessions elsewhere ended
    assert [remote.sessions(u, NOW) for u in ("alice", "bob", long_name)] == [0, 4, 0]
    assert remote.count() == 1


def test_a_stale_count_is_no_count(remote: RemoteUsers) -> None:
    remote.replace({user_key("alice"): 2}, NOW + 5)
    assert remote.sessions("alice", NOW + 5) == 2
    assert remote.sessions("alice", NOW + 5.001) == 0  # the agent stopped writing


def test_users_beyond_the_room_are_left_out_and_counted(remote: RemoteUsers) -> None:
    counts = {user_key(f"user{i}"): 1 for i in range(12)}  # 8 slots
    left_out = remote.replace(counts, NOW + 5)
    stored = [i for i in range(12) if remote.sessions(f"user{i}", NOW) == 1]
    assert left_out == 12 - len(stored) > 0 and len(stored) == remote.count()


def test_clear_empties_it_for_every_process(remote: RemoteUsers, children: Children) -> None:
    remote.replace({user_key("alice"): 2, user_key("bob"): 1}, NOW + 5)

    def reader() -> None:
        assert remote.sessions("alice", NOW) == 2

    assert children.wait(children.fork(reader)) == 0
    assert remote.clear() == 2
    assert remote.sessions("alice", NOW) == 0 and remote.count() == 0


def test_live_counts_are_the_users_live_sessions(prefix: str, tmp_path: Path) -> None:
    users = UserSessions.create(prefix, tmp_path / "users.lock", 2, 64)
    try:
        live = {"a1", "a2", "b1"}
        for user, sessid in (("alice", "a1"), ("alice", "a2"), ("alice", "a3"), ("bob", "b1")):
            users.claim(user, sessid, 10, lambda s: True)
        users.claim("carol", "c1", 10, lambda s: True)
        counts = users.live_counts(lambda s: s in live)
        assert counts == {b"alice": 2, b"bob": 1}  # a3 and carol's c1 ended
    finally:
        users.close()
        users.unlink()
