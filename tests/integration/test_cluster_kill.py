"""Kills and listings over the cluster (issue 17) with real servers: a private redis-server
and three msrpd nodes (test_cluster.py's fixture). Checked: msrp.session_kill on node 3 of a
session held on node 1 ends it there (its client's connection closed, its token then refused
with the same 481 as any unknown one, another session of node 1 relaying every frame
throughout); not found on every node for an unknown id, and for a directory entry naming a
node that holds no such session (which is asked, and kills nothing); a clear error when Redis
is down or the owner does not answer, while a local kill needs no Redis; msrp.cmaplist
cluster on every node listing the three nodes' sessions exactly; bad kill events logged and
ignored, and a forged one naming the wrong node killing nothing."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..msrpclient import MsrpClient
from .redisserver import RedisServer
from .relay import wait_for
from .test_cluster import NODES, Cluster, _redis_state, _sessid, _Stream, three_nodes


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    yield from three_nodes(redis_server, tmp_path)


_DOWN = re.compile(r"Redis at redis://127\.0\.0\.1:\d+/0 is unreachable")


def _send_to_path(sender: MsrpClient, path: str, to_uri: str, body: bytes) -> tuple[int, bytes]:
    """A SEND to `path` (a Use-Path) through the sender's relay: the answer's code and reason."""
    headers = [("Message-ID", "x1"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    headers.append(("Content-Type", "text/plain"))
    tid = sender.request("SEND", f"{path} {to_uri}", headers, body)
    answer = sender.recv(timeout=5).frame
    assert answer.tid == tid and answer.code is not None
    return answer.code, answer.reason or b""


def _entry(cluster: Cluster, sessid: str) -> str | None:
    with cluster.redis.client() as redis:
        value = redis.get(f"msrpd:sess:{sessid}")
    return None if value is None else str(value)


def _kill(cluster: Cluster, node: str, sessid: str) -> tuple[int, object, str]:
    out = cluster.nodes[node].cli("ctl", "--json", "msrp.session_kill", sessid)
    return out.returncode, json.loads(out.stdout) if out.returncode == 0 else None, out.stderr


def test_a_session_killed_from_node_3_ends_on_node_1(cluster: Cluster) -> None:
    alice, bob = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    carol, dave = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    victim = _sessid(alice)
    wait_for(lambda: _entry(cluster, victim) == "n1", 3.0, "alice's directory entry")
    stream = _Stream(carol, dave)
    stream.start()
    try:
        wait_for(lambda: len(stream.received) >= 20, 10.0, "frames before the kill")
        code, answer, err = _kill(cluster, "n3", victim)
        assert code == 0, err
        assert isinstance(answer, dict)
        assert answer["killed"] is True and answer["node"] == "n1" and answer["closed"] is True
        assert re.fullmatch(r"[0-9a-f]+", answer["conid"])
        try:
            alice.recv(timeout=5)
            raise AssertionError("alice's connection is still open")
        except EOFError:
            pass
        after = len(stream.received)
        wait_for(lambda: len(stream.received) >= after + 20, 10.0, "frames after the kill")
    finally:
        stream.finish.set()
        stream.join(10)
    assert stream.error is None, stream.error
    assert stream.received == stream.sent  # every frame once, in order
    # Alice's token is now as unknown on n1 as one never issued: the same 481.
    gone = _send_to_path(bob, alice.use_path or "", alice.uri, b"for alice")
    fake = (alice.use_path or "").replace(victim, "neverIssued0000")
    assert gone == _send_to_path(bob, fake, alice.uri, b"for nobody")
    assert gone[0] == 481
    assert all(
        s["CONDATA"]["SESSIONID"] != victim for s in cluster.ctl("n1", "msrp.cmaplist")["CONLIST"]
    )  # type: ignore[index]
    wait_for(lambda: _entry(cluster, victim) is None, 3.0, "the directory entry removed")
    assert f"cluster: node n3 asks to kill session {victim}" in cluster.nodes["n1"].log()
    assert f"cluster: session {victim} killed on node n1: True" in cluster.nodes["n3"].log()
    for node in ("n2", "n3"):
        assert "asks to kill" not in cluster.nodes[node].log()
    # Killing it again: found nowhere, from any node.
    for node in NODES:
        assert _kill(cluster, node, victim)[1] == {"killed": False, "node": None}


def test_a_kill_of_an_unknown_session_is_not_found_on_every_node(cluster: Cluster) -> None:
    held = cluster.authed("n1")
    for node in NODES:
        assert _kill(cluster, node, "no-such-session")[1] == {"killed": False, "node": None}
    # A directory entry naming a node that holds no such session: that node is asked and
    # kills nothing (it acts only on what its own cmap holds).
    with cluster.redis.client() as redis:
        redis.set("msrpd:sess:ghost", "n2", px=30_000)
    out = _kill(cluster, "n1", "ghost")[1]
    assert out == {"killed": False, "node": "n2", "conid": None, "closed": None}
    assert "cluster: node n1 asks to kill session ghost" in cluster.nodes["n2"].log()
    # A local session is killed locally, and says where.
    out = _kill(cluster, "n1", _sessid(held))[1]
    assert isinstance(out, dict) and (out["killed"], out["node"]) == (True, "n1")
    assert "asks to kill" not in cluster.nodes["n1"].log()


def test_a_kill_answers_a_clear_error_when_the_owner_is_silent_or_redis_is_down(
    cluster: Cluster,
) -> None:
    local = cluster.authed("n3")
    # The directory names a node that is not running: nobody answers within the bound,
    # [cluster] timeout (1 s here) + the worker's 1 s.
    with cluster.redis.client() as redis:
        redis.set("msrpd:sess:orphan", "n9", px=30_000)
    t0 = time.monotonic()
    assert _kill(cluster, "n3", "not-anywhere")[1] == {"killed": False, "node": None}
    quick = time.monotonic() - t0  # what `msrpd ctl` itself costs, on a machine this loaded
    t0 = time.monotonic()
    code, _, err = _kill(cluster, "n3", "orphan")
    waited = time.monotonic() - t0
    assert code != 0 and "node n9 did not answer the kill of orphan within 2 s" in err, err
    assert 2.0 <= waited < 2.0 + quick + 1.0
    cluster.redis.stop()
    wait_for(lambda: _redis_state(cluster, "n3") == "down", 5.0, "n3 sees Redis down")
    code, _, err = _kill(cluster, "n3", "remote-session")
    assert code != 0 and _DOWN.search(err), err
    out = cluster.nodes["n3"].cli("ctl", "--json", "msrp.cmaplist", "cluster")
    assert out.returncode != 0 and _DOWN.search(out.stderr), out.stderr
    # A session of this node is killed here: no Redis needed.
    code, answer, err = _kill(cluster, "n3", _sessid(local))
    assert code == 0, err
    assert isinstance(answer, dict) and (answer["killed"], answer["node"]) == (True, "n3")
    try:
        local.recv(timeout=5)
        raise AssertionError("the local session's connection is still open")
    except EOFError:
        pass


def test_cmaplist_cluster_lists_every_nodes_sessions(cluster: Cluster) -> None:
    held = {"n1": 2, "n2": 1, "n3": 0}
    expected = {(_sessid(cluster.authed(n)), n) for n, count in held.items() for _ in range(count)}

    def rows(node: str) -> list[dict[str, object]]:
        out = cluster.ctl(node, "msrp.cmaplist", "cluster")
        assert isinstance(out, dict) and out["CONCOUNT"] == len(out["CONLIST"])
        return [item["CONDATA"] for item in out["CONLIST"]]

    def listed(node: str) -> set[tuple[object, object]]:
        return {(row["SESSIONID"], row["NODE"]) for row in rows(node)}

    for node in NODES:
        wait_for(lambda n=node: listed(n) == expected, 5.0, f"every session listed on {node}")
        for row in rows(node):
            assert isinstance(row["EXPIRES"], str) and len(row["EXPIRES"]) == 24
            # Its own sessions come from its cmap, with everything Kamailio shows.
            assert ("PEER" in row and "CONID" in row) == (row["NODE"] == node)
    plain = cluster.ctl("n1", "msrp.cmaplist")
    assert isinstance(plain, dict) and plain["CONCOUNT"] == 2  # without `cluster`: this node
    assert all("NODE" not in item["CONDATA"] for item in plain["CONLIST"])


def test_bad_kill_events_are_ignored_and_a_kill_for_the_wrong_node_kills_nothing(
    cluster: Cluster,
) -> None:
    alice, bob = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    victim = _sessid(alice)
    wait_for(lambda: _entry(cluster, victim) == "n1", 3.0, "alice's directory entry")
    bad = [
        '{"kind":"kill","node":"x","sessid":"s","id":"r"}',
        json.dumps({"kind": "kill", "node": "x", "target": "n1", "sessid": "s" * 65, "id": "r"}),
        '{"kind":"killed","node":"n2","to":"n1","id":"r","killed":true,"conid":"zz"}',
    ]
    wrong = {"kind": "kill", "node": "x", "target": "n2", "sessid": victim, "id": "forged"}
    stray = {"kind": "killed", "node": "n2", "to": "n1", "id": "nobody-waits", "killed": True}
    with cluster.redis.client() as redis:
        for raw in bad:
            assert redis.publish("msrpd:events", raw) == len(NODES)
        assert redis.publish("msrpd:events", json.dumps(wrong)) == len(NODES)
        assert redis.publish("msrpd:events", json.dumps({**stray, "conid": None, "closed": None}))
    wait_for(lambda: "asks to kill session" in cluster.nodes["n2"].log(), 3.0, "n2 heard it")
    ignored = [
        "cluster: ignoring a bad event: a kill event needs target:",
        "cluster: ignoring a bad event: a kill event needs sessid:",
        "cluster: ignoring a bad event: a killed event's conid",
    ]
    for node in NODES:
        relay = cluster.nodes[node]
        wait_for(lambda r=relay: all(x in r.log() for x in ignored), 3.0, f"{node}'s log lines")
    assert "asks to kill" not in cluster.nodes["n1"].log()
    tid = alice.send_message(bob, b"still here", "s1")
    assert (alice.recv().frame.tid, bob.recv().body) == (tid, b"still here")
    assert _entry(cluster, victim) == "n1"
