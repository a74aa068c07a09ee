"""The cluster in Redis (issue 17) with real servers: a private redis-server and three msrpd
nodes on this machine (own ports and run dirs, each its own Use-Path address), started through
the CLI. Checked: bans earned on one node hold on the others within a second, also when no
node alone saw ban_after failures; cluster.nodes on any node lists all three with their
sessions; a session's directory entry comes with its AUTH and goes with its connection;
Redis stopped and restarted under a running session loses no frame, and the node says so
(log, core.ps, stats.get, Prometheus) and rebuilds the directory when Redis is back.

Each failing address is its own loopback address (127.0.0.3 and up), so a ban never touches
the clients of the other tests (127.0.0.1)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import trustme

from msrpd.protocol import digest as dg

from ..msrpclient import MsrpClient
from .redisserver import RedisServer
from .relay import LIMITS_OFF, PASSWORDS, REALM, Relay, free_port, title, wait_for

NODES = ("n1", "n2", "n3")
_SECOND = pytest.mark.serial
"""A ban measured to hold everywhere within a second: with the machine to itself (scripts/test
runs the serial tests alone, after the parallel run)."""
BAN = {"auth_failures_close": 2, "ban_after": 4, "ban_window": 30.0, "ban_time": 60.0}


class Cluster:
    def __init__(self, redis: RedisServer, nodes: dict[str, Relay], metrics: int) -> None:
        self.redis = redis
        self.nodes = nodes
        self.metrics = metrics
        """Node n1's Prometheus port."""
        self.tls = ssl.create_default_context()
        self.opened: list[MsrpClient] = []

    def client(self, node: str, source: str = "127.0.0.1", tls: bool = False) -> MsrpClient:
        relay = self.nodes[node]
        port = relay.tls_port if tls else relay.port
        assert port is not None
        client = MsrpClient(port, tls=self.tls if tls else None, timeout=10, source=source)
        self.opened.append(client)
        return client

    def authed(self, node: str, user: str = "alice") -> MsrpClient:
        client = self.client(node)
        reply = client.auth(user, PASSWORDS[user], REALM)
        assert reply.frame.code == 200, reply.frame.buf
        return client

    def ctl(self, node: str, *args: str) -> object:
        out = self.nodes[node].cli("ctl", "--json", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    yield from three_nodes(redis_server, tmp_path)


def three_nodes(
    redis_server: RedisServer, tmp_path: Path, limits: dict[str, object] | None = None
) -> Iterator[Cluster]:
    """The three nodes, started, with these [limits] on top of the usual ones; stopped when
    the generator closes (the other test_cluster_*.py's fixture too)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    metrics = free_port()
    nodes: dict[str, Relay] = {}
    try:
        for name in NODES:
            relay = Relay(
                children=2,
                tls={"certificate": str(cert_file), "private_key": str(key_file)},
                limits={**LIMITS_OFF, **BAN, **(limits or {})},
            )
            nodes[name] = relay
            relay.sections["msrp"]["use_path_addr"] = f"127.0.0.1:{relay.port}"
            relay.sections["cluster"] = {
                "redis": redis_server.url,
                "node": name,
                "heartbeat": 0.25,
                "node_ttl": 2.0,
                "timeout": 1.0,
                "retry_max": 0.5,
            }
            if name == "n1":
                relay.sections["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
            relay.write_config()
            result = relay.start()
            assert result.returncode == 0, result.stderr + relay.log()
        made = Cluster(redis_server, nodes, metrics)
        ca.configure_trust(made.tls)
        yield made
        for client in made.opened:
            client.close()
    finally:
        for relay in nodes.values():
            relay.stop()


def _sessid(client: MsrpClient) -> str:
    match = re.search(r"/([^/;]+);tcp$", client.use_path or "")
    assert match, client.use_path
    return match[1]


def _wrong_auth(client: MsrpClient) -> None:
    """An AUTH with a wrong password: 401 with a challenge, then 401 for the credentials."""
    client.request("AUTH", client.relay_uri)
    challenge = client.recv().frame
    assert challenge.code == 401
    nonce = re.search(r'nonce="([^"]+)"', (challenge.header("WWW-Authenticate") or b"").decode())
    assert nonce
    creds = dg.Credentials("alice", REALM, nonce[1], client.relay_uri, "", "auth", "00000001", "c")
    response = dg.response_for(creds, dg.ha1("alice", REALM, "wrong"), "AUTH")
    value = (
        f'Digest username="alice", realm="{REALM}", nonce="{nonce[1]}", '
        f'uri="{client.relay_uri}", response="{response}", qop=auth, nc=00000001, cnonce="c"'
    )
    client.request("AUTH", client.relay_uri, [("Authorization", value)])
    assert client.recv().frame.code == 401


def _refused(cluster: Cluster, node: str, source: str, wait: float = 1.0) -> bool:
    """A connection from `source` to `node` is closed at accept, before anything is sent
    (False: still open after `wait` seconds)."""
    client = cluster.client(node, source)
    client.sock.settimeout(wait)
    try:
        return client.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False  # admitted: on probation, open
    finally:
        client.close()


def _counters(cluster: Cluster, node: str) -> dict[str, int]:
    answer = cluster.ctl(node, "stats.get")
    assert isinstance(answer, dict)
    return {k: int(v) for k, v in answer["total"].items()}


def _fail_twice(cluster: Cluster, node: str, source: str, *, tls: bool) -> None:
    """Two wrong AUTHs on one connection: auth_failures_close = 2 closes it."""
    client = cluster.client(node, source, tls=tls)
    _wrong_auth(client)
    _wrong_auth(client)
    with pytest.raises(EOFError):
        client.recv(timeout=3)


@_SECOND
def test_a_ban_earned_on_node_1_holds_on_node_3_within_a_second(cluster: Cluster) -> None:
    attacker, bystander = "127.0.0.3", "127.0.0.1"
    assert not _refused(cluster, "n3", attacker)
    _fail_twice(cluster, "n1", attacker, tls=True)
    client = cluster.client("n1", attacker, tls=True)
    _wrong_auth(client)
    _wrong_auth(client)  # the 4th failure (ban_after): the address is banned
    banned_at = time.monotonic()
    wait_for(lambda: _refused(cluster, "n3", attacker, 0.2), 1.0, "the ban on n3")
    assert time.monotonic() - banned_at < 1.0
    with cluster.redis.client() as redis:
        left = redis.pttl(f"msrpd:ban:{attacker}")
        # ban_time from when the agent banned: around the 401 (1 s of slack for a loaded machine)
        assert 60_000 - (time.monotonic() - banned_at) * 1000 - 1000 < left <= 60_000
        assert redis.exists(f"msrpd:fails:{attacker}") == 0
    time.sleep(1.2)  # the agents and workers publish their counters once a second
    before = {node: _counters(cluster, node) for node in NODES}
    for node in NODES:
        assert _refused(cluster, node, attacker), node
        assert not _refused(cluster, node, bystander), node  # another address gets in
    time.sleep(1.2)
    first = _counters(cluster, "n1")
    assert (first["cluster_auth_failures"], first["cluster_bans_out"]) == (4, 1)
    for node in NODES:
        counters = _counters(cluster, node)
        assert counters["cluster_bans_in"] == 1, node
        assert counters["limit_banned"] == before[node]["limit_banned"] + 1, node
    assert sum(_counters(cluster, node)["cluster_bans_out"] for node in NODES) == 1


@_SECOND
def test_failures_spread_over_two_nodes_ban_on_all_three(cluster: Cluster) -> None:
    """Two failures on n1 and two on n2: neither node alone reaches ban_after (4), the
    cluster does, and n3, which saw none, refuses the address too."""
    attacker = "127.0.0.4"
    _fail_twice(cluster, "n1", attacker, tls=True)
    _fail_twice(cluster, "n2", attacker, tls=False)
    wait_for(lambda: _refused(cluster, "n3", attacker, 0.2), 1.0, "the ban on n3")
    for node in NODES:
        assert _refused(cluster, node, attacker), node
    time.sleep(1.2)
    assert sum(_counters(cluster, node)["limit_bans"] for node in NODES) == 0  # no local ban


@_SECOND
def test_bad_events_are_ignored_and_a_good_one_applies_everywhere(cluster: Cluster) -> None:
    """What arrives on the events channel is checked: garbage (bytes that are not UTF-8, JSON
    nested too deep for the parser) and an address longer than the ban table's key are logged,
    counted and ignored, as are datagrams on the report socket that are no address; a
    well-formed ban (from any node) after them holds on all, from the same agents."""
    agents = {node: _agent_pid(cluster.nodes[node]) for node in NODES}
    until = time.time() + 30
    for node in NODES:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as report:
            path = str(cluster.nodes[node].run_dir / "cluster-report.sock")
            for bad in (b"\xff\xfe127.0.0.9", b"not-an-address", b"\x00"):
                report.sendto(bad, path)
    with cluster.redis.client() as redis:
        assert redis.publish("msrpd:events", "not json") == len(NODES)
        assert redis.publish("msrpd:events", '{"kind":"kick","node":"x"}') == len(NODES)
        assert redis.publish("msrpd:events", b"\xff\xfe{") == len(NODES)
        assert redis.publish("msrpd:events", "[" * 4000) == len(NODES)
        long_addr = json.dumps({"kind": "ban", "node": "x", "addr": "a" * 49, "until": until})
        assert redis.publish("msrpd:events", long_addr) == len(NODES)
        good = json.dumps({"kind": "ban", "node": "elsewhere", "addr": "127.0.0.5", "until": until})
        assert redis.publish("msrpd:events", good) == len(NODES)
    for node in NODES:
        wait_for(lambda n=node: _refused(cluster, n, "127.0.0.5", 0.2), 1.0, f"the ban on {node}")
        assert not _refused(cluster, node, "127.0.0.1")
        log = cluster.nodes[node].log()
        assert "cluster: ignoring a bad event: Expecting value" in log
        assert "cluster: ignoring a bad event: unknown event" in log
        assert "cluster: ignoring a ban of an address too long" in log
        assert "cluster: ignoring a bad event: event nested too deep" in log
        assert log.count("cluster: ignoring a report that is no address") == 3
        assert "cluster: 127.0.0.5 banned for" in log and "(by elsewhere)" in log
        assert _agent_pid(cluster.nodes[node]) == agents[node]  # no agent died of it
        assert "Traceback" not in log
    time.sleep(1.2)  # the agents publish their counters once a second
    for node in NODES:
        # not json, kick, not UTF-8, too deep, 3 datagrams (the long address is bans.py's)
        assert _counters(cluster, node)["cluster_bad_input"] == 7


def test_cluster_nodes_lists_every_node_with_its_sessions(cluster: Cluster) -> None:
    sessions = {"n1": 2, "n2": 1, "n3": 0}
    for node, n in sessions.items():
        for _ in range(n):
            cluster.authed(node)

    def listing(node: str) -> dict[str, dict[str, object]]:
        rows = cluster.ctl(node, "cluster.nodes")
        assert isinstance(rows, list)
        return {str(row["node"]): row for row in rows}

    def settled() -> bool:
        rows = listing("n3")
        return {name: rows[name].get("sessions") for name in rows} == sessions

    wait_for(settled, 3.0, "every node's sessions in cluster.nodes")
    for asked in NODES:
        rows = listing(asked)
        assert sorted(rows) == list(NODES)
        for name, row in rows.items():
            relay = cluster.nodes[name]
            assert row["sessions"] == sessions[name]
            assert row["addr"] == f"127.0.0.1:{relay.port}"
            assert (row["workers"], row["children"], row["health"]) == (2, 2, "ok")
            assert row["pid"] == relay.pid()
            assert row["self"] is (name == asked)
            assert 0 <= float(str(row["age"])) < 2.0


def test_a_stopped_node_leaves_and_a_killed_one_is_lost(cluster: Cluster) -> None:
    """A clean stop takes the node out of the registry and its sessions out of the directory;
    a node killed outright stays listed, as lost, once node_ttl (2 s) has passed."""
    on_n3 = cluster.authed("n3")
    key = f"msrpd:sess:{_sessid(on_n3)}"
    with cluster.redis.client() as redis:
        wait_for(lambda: redis.get(key) == "n3", 2.0, "n3's entry")
        on_n3.close()
        cluster.nodes["n3"].stop()
        assert redis.smembers("msrpd:nodes") == {"n1", "n2"}
        assert redis.exists("msrpd:node:n3", key) == 0
        on_n2 = cluster.authed("n2")
        n2_key = f"msrpd:sess:{_sessid(on_n2)}"
        wait_for(lambda: redis.get(n2_key) == "n2", 2.0, "n2's entry")
        relay = cluster.nodes["n2"]
        supervisor = psutil.Process(relay.pid())
        for proc in [*supervisor.children(), supervisor]:
            proc.kill()  # no clean stop: nothing removed
        wait_for(lambda: redis.exists("msrpd:node:n2") == 0, 3.0, "n2's entry expired")
        assert redis.get(n2_key) == "n2"  # until the token expires (or n2 comes back)
    rows = cluster.ctl("n1", "cluster.nodes")
    assert rows == [
        {**_without_age(rows[0]), "age": rows[0]["age"]},  # type: ignore[index]
        {"node": "n2", "self": False, "health": "lost"},
    ]
    assert rows[0]["node"] == "n1" and rows[0]["health"] == "ok"  # type: ignore[index]


def _without_age(row: object) -> dict[str, object]:
    assert isinstance(row, dict)
    return {k: v for k, v in row.items() if k != "age"}


def _agent(relay: Relay) -> psutil.Process | None:
    """The node's cluster agent; None between its death and its successor."""
    agents = []
    for proc in psutil.Process(relay.pid()).children():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and "cluster agent" in title(proc):
                agents.append(proc)
    assert len(agents) <= 1, agents
    return agents[0] if agents else None


def _agent_pid(relay: Relay) -> int | None:
    agent = _agent(relay)
    return None if agent is None else agent.pid


def test_the_agent_is_respawned_and_restarted_by_a_reload(cluster: Cluster) -> None:
    """Only the agent loads the Redis client; a killed agent is reaped and respawned (the node
    keeps relaying meanwhile); a reload restarts it with the new settings without the node
    ever leaving the registry."""
    relay = cluster.nodes["n1"]
    alice, bob = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    key = f"msrpd:sess:{_sessid(alice)}"
    first = _agent(relay)
    assert first is not None and title(first) == "msrpd: cluster agent"
    # Only the agent loads the Redis client (its C parser shows in its memory map).
    assert "hiredis" in Path(f"/proc/{first.pid}/maps").read_text()
    others = [p for p in psutil.Process(relay.pid()).children() if p.pid != first.pid]
    assert len(others) == 2
    for proc in [psutil.Process(relay.pid()), *others]:
        assert "hiredis" not in Path(f"/proc/{proc.pid}/maps").read_text(), title(proc)
    # A ban in Redis that no node heard of (written, not published): a (re)connecting agent
    # reads every ban, so the new one applies it; n2's agent, which stayed up, does not know it.
    with cluster.redis.client() as redis:
        redis.set("msrpd:ban:127.0.0.6", repr(time.time() + 30), px=30_000)
    assert not _refused(cluster, "n1", "127.0.0.6")
    first.kill()
    tid = alice.send_message(bob, b"agent-dead", "a1")  # relaying needs no agent
    assert (alice.recv().frame.tid, bob.recv().body) == (tid, b"agent-dead")
    wait_for(lambda: _agent_pid(relay) not in (None, first.pid), 5.0, "a new agent")
    wait_for(lambda: _redis_state(cluster, "n1") == "up", 5.0, "the new agent connected")
    assert re.search(rf"cluster agent \(pid {first.pid}\) died", relay.log())
    assert _refused(cluster, "n1", "127.0.0.6")
    assert not _refused(cluster, "n2", "127.0.0.6")
    assert "cluster: 127.0.0.6 banned for" in relay.log()
    with cluster.redis.client() as redis:
        assert redis.get(key) == "n1"  # adopted by the new agent, not removed
        second = _agent_pid(relay)
        seen: list[set[str]] = []
        assert redis.pttl("msrpd:node:n1") <= 2000
        relay.sections["cluster"]["node_ttl"] = 30.0
        relay.write_config()
        assert relay.cli("reload").returncode == 0
        deadline = time.monotonic() + 5
        while _agent_pid(relay) == second and time.monotonic() < deadline:
            seen.append(redis.smembers("msrpd:nodes"))
        wait_for(lambda: _redis_state(cluster, "n1") == "up", 5.0, "the reloaded agent")
        for _ in range(20):
            seen.append(redis.smembers("msrpd:nodes"))
            time.sleep(0.05)
        assert _agent_pid(relay) not in (None, second)
        assert all(members == set(NODES) for members in seen)
        assert redis.get(key) == "n1"
        assert redis.pttl("msrpd:node:n1") > 20_000  # the new node_ttl
    assert f"cluster agent (pid {second}) exited for the reload" in relay.log()


def test_cluster_nodes_without_a_cluster_says_so(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=1)
    assert relay.start().returncode == 0, relay.log()
    out = relay.cli("ctl", "cluster.nodes")
    assert out.returncode != 0
    assert "no cluster: [cluster] redis is not set" in out.stderr
    rows = json.loads(relay.cli("ctl", "--json", "core.ps").stdout)
    assert [row["role"] for row in rows] == ["supervisor", "worker"]


def test_a_sessions_directory_entry_comes_with_its_auth_and_goes_with_its_connection(
    cluster: Cluster,
) -> None:
    client = cluster.client("n2")
    reply = client.auth("bob", PASSWORDS["bob"], REALM, expires=600)
    assert reply.frame.code == 200
    key = f"msrpd:sess:{_sessid(client)}"
    with cluster.redis.client() as redis:
        wait_for(lambda: redis.get(key) == "n2", 2.0, "the directory entry")
        assert 595_000 < redis.pttl(key) <= 600_000  # it expires with the token
        other = cluster.authed("n1")
        other_key = f"msrpd:sess:{_sessid(other)}"
        wait_for(lambda: redis.get(other_key) == "n1", 2.0, "n1's entry")
        client.close()
        wait_for(lambda: redis.exists(key) == 0, 2.0, "the entry removed at close")
        assert redis.get(other_key) == "n1"  # the other session's stays


def _scrape_up(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    match = re.search(r"^msrpd_cluster_redis_up (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match[1])


def _redis_state(cluster: Cluster, node: str) -> str:
    rows = cluster.ctl(node, "core.ps")
    assert isinstance(rows, list)
    (agent,) = [row for row in rows if row["role"] == "cluster"]
    return str(agent["redis"])


class _Stream(threading.Thread):
    """SENDs from `sender` to `receiver`, one after another until told to stop: each one's
    200 and its delivery checked as it goes."""

    def __init__(self, sender: MsrpClient, receiver: MsrpClient) -> None:
        super().__init__(daemon=True)
        self.sender, self.receiver = sender, receiver
        self.finish = threading.Event()
        self.sent: list[bytes] = []
        self.received: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.finish.is_set():
                body = f"frame-{len(self.sent):05d}".encode()
                tid = self.sender.send_message(self.receiver, body, body.decode())
                self.sent.append(body)
                answer = self.sender.recv(timeout=5)
                assert (answer.frame.tid, answer.frame.code) == (tid, 200)
                got = self.receiver.recv(timeout=5)
                assert got.frame.method == b"SEND"
                self.received.append(got.body)
                time.sleep(0.01)
        except BaseException as exc:
            self.error = exc


def test_redis_stopped_and_restarted_loses_no_local_session(cluster: Cluster) -> None:
    alice, bob = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    tokens = {_sessid(alice), _sessid(bob)}
    redis = cluster.redis
    with redis.client() as client:
        wait_for(lambda: all(client.exists(f"msrpd:sess:{t}") for t in tokens), 2.0, "entries")
    assert _redis_state(cluster, "n1") == "up" and _scrape_up(cluster.metrics) == 1.0
    stream = _Stream(alice, bob)
    stream.start()
    wait_for(lambda: len(stream.received) >= 20, 10.0, "frames before the outage")
    redis.stop()
    wait_for(lambda: _redis_state(cluster, "n1") == "down", 3.0, "core.ps: Redis down")
    assert _scrape_up(cluster.metrics) == 0.0
    time.sleep(1.2)  # the agent publishes its counters once a second
    assert _counters(cluster, "n1")["cluster_redis_up"] == 0
    assert _redis_state(cluster, "n3") == "down"
    out = cluster.nodes["n2"].cli("ctl", "cluster.nodes")
    assert out.returncode != 0 and "is unreachable" in out.stderr
    # During the outage: the stream goes on, and a new session on n1 relays.
    during = len(stream.received)
    carol, dave = cluster.authed("n1", "alice"), cluster.authed("n1", "bob")
    tokens |= {_sessid(carol), _sessid(dave)}
    tid = carol.send_message(dave, b"during-the-outage", "d1")
    answer = carol.recv()
    assert (answer.frame.tid, answer.frame.code) == (tid, 200)
    got = dave.recv()
    assert (got.frame.method, got.body) == (b"SEND", b"during-the-outage")
    wait_for(lambda: len(stream.received) >= during + 50, 10.0, "frames during the outage")
    assert stream.error is None, stream.error
    time.sleep(1.0)  # several reconnects fail meanwhile (retry_max 0.5 s)
    redis.start()  # the same port, empty: what was in Redis is gone
    wait_for(lambda: _redis_state(cluster, "n1") == "up", 5.0, "core.ps: Redis up")
    assert _scrape_up(cluster.metrics) == 1.0
    with redis.client() as client:
        wait_for(
            lambda: all(client.get(f"msrpd:sess:{t}") == "n1" for t in tokens),
            3.0,
            "the directory rebuilt from n1's cmap",
        )
        wait_for(lambda: client.smembers("msrpd:nodes") == set(NODES), 3.0, "every node back")
    rows = cluster.ctl("n2", "cluster.nodes")
    assert isinstance(rows, list)
    assert [row["node"] for row in rows] == list(NODES)
    assert {row["node"]: row["health"] for row in rows} == dict.fromkeys(NODES, "ok")
    after = len(stream.received)
    wait_for(lambda: len(stream.received) >= after + 20, 10.0, "frames after the outage")
    stream.finish.set()
    stream.join(10)
    assert stream.error is None, stream.error
    # Every frame of the stream delivered, once, in order.
    assert stream.received == stream.sent
    assert len(set(stream.received)) == len(stream.sent)
    # One line when Redis went and one when it came back, not one per retry.
    log = cluster.nodes["n1"].log()
    assert len(re.findall(r"Redis at \S+ unreachable", log)) == 1, log[-3000:]
    assert len(re.findall(r"Redis at \S+ is back after", log)) == 1, log[-3000:]
    time.sleep(1.2)
    counters = _counters(cluster, "n1")
    assert (counters["cluster_redis_up"], counters["cluster_redis_lost"]) == (1, 1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0"),
        ("redis://msrpd@127.0.0.1:{port}/0?password=s3cret", "redis://msrpd@127.0.0.1:{port}/0"),
    ],
)
def test_a_node_starts_and_relays_while_redis_is_unreachable(
    make_relay, url: str, shown: str
) -> None:  # type: ignore[no-untyped-def]
    """No Redis at start: the node starts, relays, says Redis is down (one log line however
    many retries), and cluster.nodes names the cause; the URL's password (in its userinfo or
    its query) shows nowhere."""
    relay: Relay = make_relay(children=1)
    relay.sections["msrp"]["use_path_addr"] = f"127.0.0.1:{relay.port}"
    port = free_port()
    relay.sections["cluster"] = {
        "redis": url.format(port=port),
        "node": "solo",
        "retry_max": 0.2,
    }
    relay.write_config()
    assert relay.start().returncode == 0, relay.log()
    alice, bob = MsrpClient(relay.port), MsrpClient(relay.port)
    try:
        for client, user in ((alice, "alice"), (bob, "bob")):
            assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
        tid = alice.send_message(bob, b"alone", "m1")
        assert (alice.recv().frame.tid, bob.recv().body) == (tid, b"alone")
    finally:
        alice.close()
        bob.close()
    rows = json.loads(relay.cli("ctl", "--json", "core.ps").stdout)
    assert [(row["role"], row.get("redis")) for row in rows if row["role"] == "cluster"] == [
        ("cluster", "down")
    ]
    out = relay.cli("ctl", "cluster.nodes")
    assert out.returncode != 0 and "is unreachable" in out.stderr and "refused" in out.stderr
    assert f"Redis at {shown.format(port=port)} is unreachable" in out.stderr
    kill = relay.cli("ctl", "msrp.session_kill", "nosuchsession")
    status = relay.cli("status")
    assert "cluster node solo: Redis down" in status.stdout
    time.sleep(1.0)  # about five more retries
    assert len(re.findall(r"Redis at \S+ unreachable", relay.log())) == 1
    assert f"Redis at {shown.format(port=port)} unreachable" in relay.log()
    for text in (relay.log(), out.stdout, out.stderr, kill.stdout, kill.stderr, status.stdout):
        assert "s3cret" not in text
