"""Token lookups between a worker and its cluster agent (issue 17, forwarding between nodes):
the worker's NodeFinder (cluster/finder.py) and the agent's OwnerDesk (cluster/owners.py) over
their real socket in a temporary run dir, the desk reading a real redis-server.
Checked: the answers (found, this node's, a lost node's, unknown), what a worker keeps and how
long, Redis down, an agent that says nothing (the frame waits [cluster] timeout at most) or
restarts, the bound on questions out (all of them reach the agent), bad messages refused
(where.py's codec)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from msrpd.cluster import finder as finder_module
from msrpd.cluster import shares
from msrpd.cluster.finder import NodeFinder
from msrpd.cluster.keys import Keys
from msrpd.cluster.owners import OwnerDesk
from msrpd.cluster.shares import Asker, Later, share_key
from msrpd.cluster.status import RedisStatus
from msrpd.cluster.where import (
    DOWN,
    FOUND,
    NONE,
    Answer,
    decode_answer,
    decode_ask,
    encode_answer,
    encode_ask,
)
from msrpd.protocol import MsrpUri
from msrpd.routing.waits import NotYet
from msrpd.shm import Counter, Stats, StatsCounters

from ..integration.redisserver import RedisServer, private_redis

TIMEOUT = 0.5
OURS = "127.0.0.1:2855"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from private_redis()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture
def stats(prefix: str) -> Iterator[Stats]:
    stats = Stats.create(prefix, 2)
    try:
        yield stats
    finally:
        stats.close()
        stats.unlink()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    """A socket where the agent's would be (`_listening`), closed after the test."""
    sock = _listening(tmp_path / "where.sock")
    try:
        yield sock
    finally:
        sock.close()


def _finder(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> NodeFinder:
    def ours(uri: MsrpUri) -> bool:
        return f"{uri.host}:{uri.port}" == OURS

    return NodeFinder(tmp_path / "where.sock", TIMEOUT, StatsCounters(), loop, ours)


def _asker(addr: str = "192.0.2.1", port: int = 4000) -> Asker:
    """A connection from `addr`, as ConnEnv makes it."""
    return Asker(f"tls:{addr}:{port}", addr)


async def _ask(
    finder: NodeFinder, token: str, asker: Asker | None = None
) -> tuple[MsrpUri | None, float]:
    """where(token) as a routed frame sees it: the answer once it has landed (the frame
    routed again must find it at once), and how long the frame waited. `asker`: its
    connection (default: a new one)."""
    asker = asker or _asker()
    started = time.monotonic()
    try:
        return finder.where(token, asker), 0.0
    except NotYet as wait:
        landed = asyncio.get_running_loop().create_future()
        wait.pending.then(lambda: landed.set_result(None))
        await landed
    return finder.where(token, asker), time.monotonic() - started


class Desk:
    """An OwnerDesk of node n1 on a real Redis, its socket where the finder looks."""

    def __init__(self, redis: RedisServer, tmp_path: Path, stats: Stats) -> None:
        self.client: Redis | None = Redis(port=redis.port, decode_responses=True)
        self.status = RedisStatus(redis.url, stats, 1)
        self.desk = OwnerDesk(Keys("t:"), "n1", self.status, TIMEOUT, lambda: self.client)
        self.path = tmp_path / "where.sock"

    async def __aenter__(self) -> Desk:
        self.desk.open(self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.desk.close(self.path)
        if self.client is not None:
            await self.client.aclose()


def _run(loop: asyncio.AbstractEventLoop, step: Callable[[], Any]) -> Any:
    return loop.run_until_complete(step())


def test_the_directory_and_the_registry_decide(
    redis_server: RedisServer, tmp_path: Path, loop: asyncio.AbstractEventLoop, stats: Stats
) -> None:
    with redis_server.client() as redis:
        redis.set("t:sess:tok2", "n2")
        redis.hset("t:node:n2", mapping={"addr": "10.0.0.2:2856"})
        redis.set("t:sess:tok1", "n1")  # this node's own
        redis.set("t:sess:tok3", "n3")  # n3 has no registry entry: lost
        redis.set("t:sess:tok4", "n4")
        redis.hset("t:node:n4", mapping={"addr": f"msrps://{OURS}"})  # names us: misconfigured
        redis.set("t:sess:tok6", "n6")
        redis.hset("t:node:n6", mapping={"addr": "relay 6:2855"})  # no host:port

    async def steps() -> None:
        async with Desk(redis_server, tmp_path, stats):
            finder = _finder(tmp_path, loop)
            uri, waited = await _ask(finder, "tok2")
            assert uri is not None and uri.raw == "msrps://10.0.0.2:2856/tok2;tcp"
            assert 0 < waited < TIMEOUT
            for token in ("tok1", "tok3", "tok4", "tok6", "nobody"):
                assert await _ask(finder, token) == (None, pytest.approx(0, abs=TIMEOUT)), token
            # kept: asked again, answered at once, no new question
            assert finder.where("tok2", _asker()) == uri
            assert finder.where("nobody", _asker()) is None
            counters = finder.counters.values
            assert counters[Counter.cluster_lookups] == 6
            assert counters[Counter.cluster_lookup_failures] == 0
            finder.close()

    _run(loop, steps)


def test_frames_for_one_token_share_one_question_and_a_miss_is_kept_a_second(
    redis_server: RedisServer,
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    stats: Stats,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(finder_module, "MISS_TTL", 0.3)

    async def steps() -> None:
        async with Desk(redis_server, tmp_path, stats):
            finder = _finder(tmp_path, loop)
            results = await asyncio.gather(*(_ask(finder, "late") for _ in range(5)))
            assert [uri for uri, _ in results] == [None] * 5
            assert finder.counters.values[Counter.cluster_lookups] == 1
            with redis_server.client() as redis:  # the session's entry comes at a heartbeat
                redis.set("t:sess:late", "n2")
                redis.hset("t:node:n2", mapping={"addr": "10.0.0.2:2856"})
            assert finder.where("late", _asker()) is None  # the miss is kept...
            await asyncio.sleep(0.35)
            uri, _ = await _ask(finder, "late")  # ...for MISS_TTL only
            assert uri is not None and uri.host == "10.0.0.2"
            assert finder.counters.values[Counter.cluster_lookups] == 2
            finder.close()

    _run(loop, steps)


def test_redis_down_is_answered_at_once_and_counted(
    redis_server: RedisServer, tmp_path: Path, loop: asyncio.AbstractEventLoop, stats: Stats
) -> None:
    async def steps() -> None:
        async with Desk(redis_server, tmp_path, stats) as desk:
            client, desk.client = desk.client, None  # the agent's session with Redis is down
            finder = _finder(tmp_path, loop)
            uri, waited = await _ask(finder, "tok2")
            assert uri is None and waited < TIMEOUT / 2
            assert finder.counters.values[Counter.cluster_lookup_failures] == 1
            desk.client = client
            finder.close()

    _run(loop, steps)


def _listening(path: Path) -> socket.socket:
    """A socket where the agent's would be, that answers nothing by itself."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(str(path))
    sock.listen(8)
    sock.setblocking(False)
    return sock


async def _accepted(listener: socket.socket) -> socket.socket:
    for _ in range(100):
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        conn.settimeout(1)
        return conn
    raise AssertionError("the finder did not connect")


def test_a_silent_agent_holds_a_frame_for_the_timeout_only(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    """The agent takes the question and says nothing (a Redis read hanging): the frame is
    routed again after [cluster] timeout with no node, and a late answer changes nothing.
    Then the agent restarts: the next question goes on a new connection."""

    async def steps() -> None:
        finder = _finder(tmp_path, loop)
        task = asyncio.ensure_future(_ask(finder, "tok2"))
        agent = await _accepted(listener)
        assert decode_ask(agent.recv(512)) == ("1", "tok2")
        uri, waited = await task
        assert uri is None
        assert TIMEOUT - 0.05 <= waited < TIMEOUT + 0.3
        assert finder.counters.values[Counter.cluster_lookup_failures] == 1
        agent.send(encode_answer(Answer("1", "tok2", FOUND, "10.0.0.2:2856")))
        await asyncio.sleep(0.05)
        assert finder.where("tok2", _asker()) is None  # the miss stays for MISS_TTL
        agent.close()  # the agent restarts
        await asyncio.sleep(0.05)
        task = asyncio.ensure_future(_ask(finder, "tok5"))
        again = await _accepted(listener)
        assert decode_ask(again.recv(512)) == ("2", "tok5")
        again.send(encode_answer(Answer("2", "tok5", FOUND, "10.0.0.2:2856")))
        uri, _ = await task
        assert uri is not None and uri.raw == "msrps://10.0.0.2:2856/tok5;tcp"
        again.close()
        finder.close()

    _run(loop, steps)


def test_questions_out_are_bounded_and_no_agent_is_no_node(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    async def steps() -> None:
        finder = _finder(tmp_path, loop)
        for n in range(finder_module.MAX_IN_FLIGHT):  # each from a connection of its own
            with pytest.raises(NotYet):
                finder.where(f"t{n}", _asker(f"192.0.2.{n}"))
        assert finder.where("one-more", _asker("198.51.100.1")) is None  # at once: nothing
        assert finder.counters.values[Counter.cluster_lookup_failures] == 1  # queues unbounded
        assert finder.where("bad token", _asker()) is None  # never asked: no node issues it
        assert finder.counters.values[Counter.cluster_lookups] == finder_module.MAX_IN_FLIGHT
        agent = await _accepted(listener)
        asked = [decode_ask(agent.recv(512))[1] for _ in range(finder_module.MAX_IN_FLIGHT)]
        assert asked == [f"t{n}" for n in range(finder_module.MAX_IN_FLIGHT)]  # none lost
        agent.close()
        finder.close()
        listener.close()
        (tmp_path / "where.sock").unlink()
        gone = _finder(tmp_path, loop)  # the agent is not there (restarting)
        assert gone.where("t0", _asker()) is None
        assert gone.counters.values[Counter.cluster_lookup_failures] == 1
        gone.close()

    _run(loop, steps)


def test_the_codec_refuses_what_is_not_a_question_or_an_answer() -> None:
    assert decode_ask(encode_ask("ff", "a-B_c")) == ("ff", "a-B_c")
    for answer in (
        Answer("1", "tok", FOUND, "[2001:db8::1]:2855"),
        Answer("2", "tok", NONE),
        Answer("3", "tok", DOWN),
    ):
        assert decode_answer(encode_answer(answer)) == answer
    for bad in (b"", b"1", b"1 ", b"xyz tok", b"1 a b", b"1 " + b"t" * 65, b"1 tok\n"):
        with pytest.raises(ValueError):
            decode_ask(bad)
    for bad in (b"1 tok found", b"1 tok found a b", b"1 tok maybe", b"1 tok none 10.0.0.1:1"):
        with pytest.raises(ValueError):
            decode_answer(bad)


def test_a_connection_has_two_questions_out_then_its_frame_waits_for_its_oldest(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    """Over PER_CONN (a connection whose frames were routed after its 200: a path naming
    this relay twice), its next frame waits for its own oldest question, not asked meanwhile,
    and asks once routed again; another connection, from the same address too, asks."""
    assert shares.PER_CONN == 2

    async def steps() -> None:
        finder = _finder(tmp_path, loop)
        alice = _asker("192.0.2.7")
        waits = []
        for token in ("a1", "a2", "a3"):
            with pytest.raises(NotYet) as caught:
                finder.where(token, alice)
            waits.append(caught.value.pending)
        assert waits[2] is waits[0]
        with pytest.raises(NotYet):
            finder.where("b1", _asker("192.0.2.7", 4001))
        agent = await _accepted(listener)
        asked = [decode_ask(agent.recv(512)) for _ in range(3)]
        assert asked == [("1", "a1"), ("2", "a2"), ("3", "b1")]  # a3 not asked
        resumed = asyncio.get_running_loop().create_future()
        waits[2].then(lambda: resumed.set_result(None))
        agent.send(encode_answer(Answer("1", "a1", NONE)))
        await resumed
        with pytest.raises(NotYet):  # a3's frame, routed again: it asks now
            finder.where("a3", alice)
        assert decode_ask(agent.recv(512)) == ("4", "a3")
        counters = finder.counters.values
        assert counters[Counter.cluster_lookups] == 4
        assert counters[Counter.cluster_lookups_refused] == 0
        agent.close()
        finder.close()

    _run(loop, steps)


def test_connections_from_one_address_have_a_quarter_of_the_questions(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, listener: socket.socket
) -> None:
    """PER_ADDR questions out from one source address (many connections, one each); the next
    connection's frame from there waits for the address's oldest question, not asked
    meanwhile, and asks once routed again; a sender from another address still asks."""
    per_addr = shares.PER_ADDR
    assert per_addr == finder_module.MAX_IN_FLIGHT // 4 == 16

    async def steps() -> None:
        finder = _finder(tmp_path, loop)
        firsts = []
        for n in range(per_addr):
            with pytest.raises(NotYet) as caught:
                finder.where(f"m{n}", _asker("203.0.113.9", 5000 + n))
            firsts.append(caught.value.pending)
        over = _asker("203.0.113.9", 6000)
        with pytest.raises(NotYet) as caught:
            finder.where("m-over", over)
        assert caught.value.pending is firsts[0]
        with pytest.raises(NotYet):
            finder.where("real", _asker("192.0.2.1"))
        counters = finder.counters.values
        assert counters[Counter.cluster_lookups] == per_addr + 1
        assert counters[Counter.cluster_lookups_refused] == 0
        assert counters[Counter.cluster_lookup_failures] == 0
        agent = await _accepted(listener)
        asked = [decode_ask(agent.recv(512))[1] for _ in range(per_addr + 1)]
        assert asked == [f"m{n}" for n in range(per_addr)] + ["real"]
        resumed = asyncio.get_running_loop().create_future()
        firsts[0].then(lambda: resumed.set_result(None))
        agent.send(encode_answer(Answer("1", "m0", NONE)))  # the oldest answered ...
        await resumed
        with pytest.raises(NotYet):  # ... the frame that waited asks now
            finder.where("m-over", over)
        assert decode_ask(agent.recv(512))[1] == "m-over"
        agent.close()
        finder.close()

    _run(loop, steps)


def test_an_ipv6_host_takes_one_share_for_its_64() -> None:
    assert share_key("[2001:db8::1]") == share_key("[2001:db8::ffff:2]") == "2001:db8::/64"
    assert share_key("[2001:db8:0:1::1]") == "2001:db8:0:1::/64"
    assert share_key("192.0.2.1") == "192.0.2.1"
    assert share_key("[not an address]") == "[not an address]"
    assert _asker("[2001:db8::7]").addr == "2001:db8::/64"


def test_a_connection_asking_after_tokens_nobody_holds_waits_after_a_few(
    redis_server: RedisServer,
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    stats: Stats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MISS_BURST of its questions answered "none", then one a second (MISS_RATE): its next
    frame for a token not kept waits (not asked) until it may ask, then asks; what the cache
    holds it still gets at once, and other connections still ask. A frame that cannot wait
    is answered at once and counted refused."""
    burst = shares.MISS_BURST
    assert (burst, shares.MISS_RATE) == (8, 1.0)
    with redis_server.client() as redis:
        redis.set("t:sess:tok2", "n2")
        redis.hset("t:node:n2", mapping={"addr": "10.0.0.2:2856"})

    async def steps() -> None:
        async with Desk(redis_server, tmp_path, stats):
            finder = _finder(tmp_path, loop)
            counters = finder.counters.values
            prober = _asker("203.0.113.5")
            for n in range(burst):
                uri, waited = await _ask(finder, f"made-up-{n}", prober)
                assert uri is None and waited > 0
            assert counters[Counter.cluster_lookups] == burst
            began = time.monotonic()
            with pytest.raises(NotYet) as caught:
                finder.where("made-up-x", prober)
            later = caught.value.pending
            assert isinstance(later, Later)
            wait = (prober.debt - (burst - 1)) / shares.MISS_RATE  # its debt just now
            assert 0 < wait <= 1 / shares.MISS_RATE
            with pytest.raises(NotYet) as caught:  # the same wait for its next frame
                finder.where("made-up-x2", prober)
            assert caught.value.pending is later
            finder.cannot_wait("made-up-x")  # routed after its 200: answered, counted
            assert counters[Counter.cluster_lookups] == burst
            assert counters[Counter.cluster_lookups_refused] == 1
            uri, _ = await _ask(finder, "tok2")  # another connection asks
            assert uri is not None and finder.where("tok2", prober) == uri  # the cache
            resumed = asyncio.get_running_loop().create_future()
            later.then(lambda: resumed.set_result(time.monotonic() - began))
            waited_for = await resumed
            assert wait - 0.02 <= waited_for < wait + 0.5
            uri, waited = await _ask(finder, "made-up-x", prober)  # routed again: asks
            assert uri is None and waited > 0
            with pytest.raises(NotYet) as caught:
                finder.where("made-up-z", prober)
            assert isinstance(caught.value.pending, Later)
            assert counters[Counter.cluster_lookups] == burst + 2
            assert counters[Counter.cluster_lookups_refused] == 1
            finder.close()

    with caplog.at_level(logging.INFO, "msrpd.cluster.finder"):
        _run(loop, steps)
    told = [r.getMessage() for r in caplog.records if "tokens nobody holds" in r.getMessage()]
    assert told == [  # once a minute per worker, however many connections
        "cluster: tls:203.0.113.5:4000 asked where 8 tokens nobody holds are: one such "
        "question a second from it now (further such lines within 60 s left out)"
    ]


def test_redis_down_costs_a_connection_none_of_its_misses(
    redis_server: RedisServer, tmp_path: Path, loop: asyncio.AbstractEventLoop, stats: Stats
) -> None:
    async def steps() -> None:
        async with Desk(redis_server, tmp_path, stats) as desk:
            client, desk.client = desk.client, None
            finder = _finder(tmp_path, loop)
            sender = _asker("192.0.2.9")
            for n in range(shares.MISS_BURST + 2):
                assert (await _ask(finder, f"real-{n}", sender))[0] is None
            counters = finder.counters.values
            assert counters[Counter.cluster_lookups] == shares.MISS_BURST + 2
            assert counters[Counter.cluster_lookups_refused] == 0
            desk.client = client
            finder.close()

    _run(loop, steps)
