"""Users' quotas and rates over the cluster, and msrp.conns over the cluster (issue 17), with
real servers: a private redis-server and three msrpd nodes (test_cluster.py's fixture).

Checked: with max_sessions_per_user = 2, alice's sessions on n1 and n2 make n3 (and n1)
answer her next AUTH with the 403 one node answers over its quota, and n3 lets her in again
once one of them ends; a user's rate over sessions on two nodes holds over both (each gets
half), every frame answered 200 and delivered once, in order; Redis down: each node holds
the quota over its own sessions alone, and says so, and counts the others again when Redis
is back; `msrpd ctl --cluster msrp.conns` on n3 lists exactly the connections of all three
nodes, and names a live node that does not answer.

What each node counts elsewhere is read from its shared memory (shm/remoteusers.py), so no
test waits a guessed time for the agents' heartbeats."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.rundir import layout_for
from msrpd.workers.limits import FORBIDDEN_SESSIONS

from ..msrpclient import MsrpClient
from .redisserver import RedisServer
from .relay import PASSWORDS, REALM, wait_for
from .test_cluster import NODES, Cluster, _counters, _redis_state, _sessid, three_nodes

LIMITS = {"max_sessions_per_user": 2, "user_frame_rate": 40.0, "rate_burst": 0.5}
"""alice's 40 frames/s over the cluster: 20 for each of two sessions, in bursts of 10."""
FRAMES = 60


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    yield from three_nodes(redis_server, tmp_path, LIMITS)


def _elsewhere(cluster: Cluster, node: str, user: str) -> int:
    """`user`'s sessions on the other nodes, as `node`'s workers see them."""
    shm = layout_for(cluster.nodes[node].settings()).attach_all()
    try:
        return shm.remote_users.sessions(user, time.time())
    finally:
        shm.close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def _auth(cluster: Cluster, node: str, user: str = "alice") -> tuple[int, bytes, MsrpClient]:
    client = cluster.client(node)
    frame = client.auth(user, PASSWORDS[user], REALM).frame
    assert frame.code is not None
    return frame.code, frame.reason or b"", client


_OVER = (FORBIDDEN_SESSIONS[0], FORBIDDEN_SESSIONS[1].encode())


def test_the_session_quota_holds_over_the_cluster(cluster: Cluster) -> None:
    first = cluster.authed("n1", "alice")
    cluster.authed("n2", "alice")
    wait_for(lambda: _elsewhere(cluster, "n3", "alice") == 2, 5.0, "n3 counting n1's and n2's")
    code, reason, refused = _auth(cluster, "n3")
    assert (code, reason) == _OVER and refused.use_path is None
    wait_for(lambda: _elsewhere(cluster, "n1", "alice") == 1, 5.0, "n1 counting n2's")
    assert _auth(cluster, "n1")[:2] == _OVER  # one here, one on n2
    assert _auth(cluster, "n3", "bob")[0] == 200  # another user's quota is its own
    with cluster.redis.client() as redis:
        assert redis.hgetall("msrpd:usage:n1") == {"alice": "1"}
        assert 0 < redis.pttl("msrpd:usage:n1") <= 2000  # node_ttl: gone with its node
    first.close()  # one of alice's sessions ends
    wait_for(lambda: _elsewhere(cluster, "n3", "alice") == 1, 5.0, "n3 seeing it end")
    code, _, again = _auth(cluster, "n3")
    assert code == 200 and again.use_path
    # n1, holding none of them now, counts n2's and n3's.
    wait_for(lambda: _elsewhere(cluster, "n1", "alice") == 2, 5.0, "n1 counting n3's")
    assert _auth(cluster, "n1")[:2] == _OVER
    time.sleep(1.2)  # the workers publish their counters once a second
    counters = {node: _counters(cluster, node)["limit_user_sessions"] for node in NODES}
    assert counters == {"n1": 2, "n2": 0, "n3": 1}
    scraped = _scrape(cluster.metrics)  # n1's
    per_worker = re.findall(
        r'^msrpd_limited_total\{limit="max_sessions_per_user",worker="\d+"\} (\S+)$', scraped, re.M
    )
    assert sum(map(float, per_worker)) == 2.0, scraped
    assert re.search(r"^msrpd_cluster_users_left_out 0\.0$", scraped, re.M), scraped
    for node in ("n1", "n3"):
        log = cluster.nodes[node].log()
        assert "AUTH of 'alice' refused: the user holds as many sessions as allowed" in log


class _Burst(threading.Thread):
    """FRAMES SENDs from `sender` to `receiver` at once, then every answer and delivery."""

    def __init__(self, sender: MsrpClient, receiver: MsrpClient) -> None:
        super().__init__(daemon=True)
        self.sender, self.receiver = sender, receiver
        self.tids: list[bytes] = []
        self.answers: list[tuple[bytes, int | None]] = []
        self.received: list[bytes] = []
        self.took = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i in range(FRAMES):
                self.tids.append(self.sender.send_message(self.receiver, b"f%02d" % i, f"m{i}"))
            for _ in range(FRAMES):
                frame = self.sender.recv(timeout=20).frame
                self.answers.append((frame.tid, frame.code))
            self.took = time.monotonic() - start
            for _ in range(FRAMES):
                got = self.receiver.recv(timeout=20)
                assert got.frame.method == b"SEND"
                self.received.append(got.body)
        except BaseException as exc:
            self.error = exc


def test_a_users_rate_holds_over_its_sessions_on_two_nodes(cluster: Cluster) -> None:
    alice1, bob1 = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    alice2, bob2 = cluster.authed("n2", "alice"), cluster.authed("n2", "bob")
    for node in ("n1", "n2"):
        wait_for(lambda n=node: _elsewhere(cluster, n, "alice") == 1, 5.0, f"{node} counting")  # type: ignore[misc]
    time.sleep(1.2)  # the workers' tick (once a second) takes the new shares
    before = {node: _counters(cluster, node) for node in ("n1", "n2")}
    bursts = [_Burst(alice1, bob1), _Burst(alice2, bob2)]
    for burst in bursts:
        burst.start()
    for burst in bursts:
        burst.join(60)
    for burst in bursts:
        assert burst.error is None, burst.error
        # Every frame answered 200, once, in order, and delivered once, in order.
        assert burst.answers == [(tid, 200) for tid in burst.tids]
        assert burst.received == [b"f%02d" % i for i in range(FRAMES)]
        # Half of 40 frames/s each: a burst of 10, then 50 at 20/s. Each node alone would
        # let 60 through in 1 s (a burst of 20, then 40 at 40/s).
        assert burst.took >= 2.0, burst.took
    time.sleep(1.2)  # the workers publish their counters once a second
    for node in ("n1", "n2"):
        after = _counters(cluster, node)
        assert after["limit_user_rate"] > before[node]["limit_user_rate"], node
        assert after["limit_rate"] == before[node]["limit_rate"] == 0  # session rates off


def test_with_redis_down_each_node_holds_the_quota_over_its_own_sessions(
    cluster: Cluster,
) -> None:
    cluster.authed("n1", "alice")
    cluster.authed("n2", "alice")
    wait_for(lambda: _elsewhere(cluster, "n3", "alice") == 2, 5.0, "n3 counting n1's and n2's")
    cluster.redis.stop()
    wait_for(lambda: _redis_state(cluster, "n3") == "down", 5.0, "n3 sees Redis down")
    alone = "cluster: max_sessions_per_user and the user rates count this node's sessions alone"
    wait_for(lambda: alone in cluster.nodes["n3"].log(), 5.0, "n3 saying so")
    assert _elsewhere(cluster, "n3", "alice") == 0
    assert _auth(cluster, "n3")[0] == 200
    assert _auth(cluster, "n3")[0] == 200
    assert _auth(cluster, "n3")[:2] == _OVER  # n3's own two
    cluster.redis.start()  # empty: every node writes its counts again
    wait_for(lambda: _elsewhere(cluster, "n1", "alice") == 3, 10.0, "n1 counting n2's and n3's")
    assert _auth(cluster, "n1")[:2] == _OVER
    with cluster.redis.client() as redis:
        assert redis.hgetall("msrpd:usage:n3") == {"alice": "2"}


def _conns(cluster: Cluster, node: str, *args: str) -> list[dict[str, object]]:
    rows = cluster.ctl(node, *args)
    assert isinstance(rows, list)
    return rows


def _peer(client: MsrpClient) -> str:
    host, port = client.sock.getsockname()[:2]
    return f"tcp:{host}:{port}"


def test_conns_over_the_cluster_lists_every_nodes_connections(cluster: Cluster) -> None:
    clients = {
        "n1": [cluster.authed("n1", "alice"), cluster.authed("n1", "bob")],
        "n2": [cluster.authed("n2", "alice")],
        "n3": [cluster.authed("n3", "bob"), cluster.client("n3")],  # one not authenticated
    }
    listed = _conns(cluster, "n3", "--cluster", "msrp.conns")
    assert all("error" not in row for row in listed), listed
    fields = ("node", "slot", "generation", "pid", "conid", "peer", "local", "transport")

    def key(row: dict[str, object]) -> tuple[object, ...]:
        return tuple(row[f] for f in fields)

    each = [{**row, "node": node} for node in NODES for row in _conns(cluster, node, "msrp.conns")]
    assert sorted(map(key, listed)) == sorted(map(key, each))
    assert [row["node"] for row in listed] == sorted(str(row["node"]) for row in listed)
    for node, opened in clients.items():
        peers = sorted(str(row["peer"]) for row in listed if row["node"] == node)
        assert peers == sorted(map(_peer, opened)), node
    sessions = sorted(s for row in listed for s in row["sessions"])  # type: ignore[attr-defined]
    assert sessions == sorted(
        _sessid(c) for opened in clients.values() for c in opened if c.use_path
    )
    # --cluster on cmaplist is its "cluster" parameter.
    assert cluster.ctl("n3", "--cluster", "msrp.cmaplist")["CONCOUNT"] == 4  # type: ignore[index]
    # A live node that does not answer is named, within the bound ([cluster] timeout + 1 s).
    with cluster.redis.client() as redis:
        redis.sadd("msrpd:nodes", "n9")
        redis.hset("msrpd:node:n9", mapping={"health": "ok", "beat": repr(time.time())})
        redis.pexpire("msrpd:node:n9", 30_000)
    t0 = time.monotonic()
    listed = _conns(cluster, "n3", "--cluster", "msrp.conns")
    assert 2.0 <= time.monotonic() - t0 < 10.0  # waited for n9 as long as the bound, no more
    assert [row for row in listed if row["node"] == "n9"] == [
        {"node": "n9", "error": "no answer within 2 s"}
    ]
    assert sorted(map(key, (r for r in listed if r["node"] != "n9"))) == sorted(map(key, each))
    # Not a listing method: refused before anything is asked.
    out = cluster.nodes["n3"].cli("ctl", "--cluster", "core.uptime")
    assert out.returncode == 2 and "--cluster lists with msrp.cmaplist, msrp.conns" in out.stderr
