"""UserSessions (shm/usersess.py): a user's sessions over every process, released by whatever
ends a session (the cmap no longer holding it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import Claim, UserSessions
from msrpd.shm.usersess import MAX_SLOTS

from ..forking import Children


@pytest.fixture
def users(prefix: str, tmp_path: Path) -> Iterator[UserSessions]:
    table = UserSessions.create(prefix, tmp_path / "users.lock", 4, 64)
    try:
        yield table
    finally:
        table.close()
        table.unlink()


def test_claims_up_to_the_limit_and_dead_sessions_free_their_place(users: UserSessions) -> None:
    live = {"s1", "s2"}

    def alive(sessid: str) -> bool:
        return sessid in live

    assert users.claim("alice", "s1", 2, alive) is Claim.GRANTED
    assert users.claim("alice", "s2", 2, alive) is Claim.GRANTED
    assert users.claim("alice", "s3", 2, alive) is Claim.AT_LIMIT
    assert users.claim("bob", "s4", 2, alive) is Claim.GRANTED  # another user
    assert users.sessions("alice") == ["s1", "s2"]
    live.discard("s1")  # its connection closed, or it expired: gone from the cmap
    assert users.claim("alice", "s3", 2, alive) is Claim.GRANTED
    assert users.sessions("alice") == ["s2", "s3"]


def test_odd_names_and_ids(users: UserSessions) -> None:
    def alive(sessid: str) -> bool:
        return True

    long_name = "ü" * 100  # 200 bytes: kept under its hash
    assert users.claim(long_name, "s1", 1, alive) is Claim.GRANTED
    assert users.claim(long_name, "s2", 1, alive) is Claim.AT_LIMIT
    assert users.claim("ü" * 99 + "x", "s3", 1, alive) is Claim.GRANTED  # not the same user
    assert users.claim("carol", "x" * 33, 1, alive) is Claim.NO_ROOM  # an id too long to keep
    assert users.claim("carol", "x" * 32, 1, alive) is Claim.GRANTED
    for i in range(MAX_SLOTS + 1):
        users.claim("dave", f"d{i}", 100, alive)  # a limit over the slots: MAX_SLOTS
    assert len(users.sessions("dave")) == MAX_SLOTS


def test_sweep_removes_users_without_a_live_session(users: UserSessions) -> None:
    live = {"b1"}

    def alive(sessid: str) -> bool:
        return sessid in live

    users.claim("alice", "a1", 3, alive)
    users.claim("bob", "b1", 3, alive)
    assert sum(users.sweep_stripe(i, alive) for i in range(users.n_stripes)) == 1
    assert users.sessions("alice") == [] and users.sessions("bob") == ["b1"]


def test_processes_claiming_at_once_never_pass_the_limit(
    users: UserSessions, children: Children
) -> None:
    def worker(n: int) -> None:
        for i in range(20):
            users.claim("alice", f"w{n}-{i}", 10, lambda sessid: True)

    pids = [children.fork(lambda n=n: worker(n)) for n in range(4)]
    assert [children.wait(pid) for pid in pids] == [0] * 4
    assert len(users.sessions("alice")) == 10
