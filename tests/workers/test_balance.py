"""Accept balancing and the accept socket (msrpd/workers/migrate/balance.py, inbox.py,
fdpass.py) with real TCP connections, real Unix sockets and a real heartbeat table: a worker
passes a new connection to a less loaded peer of its generation, bytes the client sent
before the pass included; it keeps it when no peer is less loaded (counting what it passed
that the peer has not taken up yet) or the peer is gone. What the accept socket receives
is served, or closed when it cannot be (never left open unowned)."""

from __future__ import annotations

import array
import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.rundir import accept_path
from msrpd.shm import Counter, Heartbeats, StatsCounters, WorkerState
from msrpd.workers.migrate.balance import AcceptBalancer
from msrpd.workers.migrate.fdpass import FdSender
from msrpd.workers.migrate.inbox import AcceptInbox
from msrpd.workers.migrate.wire import MoveState, encode_batch, encode_moved, encode_passed

from .migrating import Net

LISTEN = "tcp:127.0.0.1:2855"


class Side:
    """One worker's end: its inbox, what it adopted, and its balancer."""

    def __init__(
        self, run_dir: Path, slot: int, index: int, hb: Heartbeats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.adopted: list[tuple[socket.socket, str]] = []
        self.moved: list[tuple[socket.socket, bytes]] = []
        self.counters = StatsCounters()
        self.inbox = AcceptInbox(
            accept_path(run_dir, slot, 1),
            lambda sock, text: self.adopted.append((sock, text)),
            self._moved,
            self.counters,
            loop,
        )
        self.balancer = AcceptBalancer(
            run_dir, slot, 1, index, hb, self.counters, FdSender(), self.inbox
        )

    def _moved(self, sock: socket.socket, message: bytes) -> None:
        MoveState.decode(message)  # a bad one raises: the inbox closes the socket
        self.moved.append((sock, message))

    def close(self) -> None:
        for sock, _ in self.adopted + self.moved:
            sock.close()
        self.balancer.close()


@pytest.fixture
def world(tmp_path: Path, prefix: str) -> Iterator[tuple[Side, Side, Heartbeats, Net]]:
    hb = Heartbeats.create(prefix, 4)
    loop = asyncio.new_event_loop()
    net = Net(loop)
    hb.claim(0, 100, slot=0, generation=1)
    hb.claim(1, 101, slot=1, generation=1)
    # The inboxes' loop never runs: the test calls receive() where a worker's loop would.
    idle = asyncio.new_event_loop()
    me, peer = Side(tmp_path, 0, 0, hb, idle), Side(tmp_path, 1, 1, hb, idle)
    me.balancer.start()
    peer.balancer.start()
    try:
        yield me, peer, hb, net
    finally:
        me.close()
        peer.close()
        net.close()
        loop.close()
        idle.close()
        hb.region.close()
        hb.region.unlink()


def running(hb: Heartbeats, index: int, conns: int) -> None:
    hb.beat(index, WorkerState.RUNNING, conns)


def test_a_connection_goes_to_a_less_loaded_peer_with_its_unread_bytes(world) -> None:  # type: ignore[no-untyped-def]
    me, peer, hb, net = world
    running(hb, 0, 3)
    running(hb, 1, 0)
    me.balancer.refresh()
    transport, client = net.connect()
    client.sendall(b"AUTH before the pass")
    assert me.balancer.offer(transport, 3, LISTEN)
    assert transport.is_closing()  # our descriptor goes; the connection stays open
    net.loop.run_until_complete(asyncio.sleep(0))
    assert peer.inbox.receive() == 1
    ((sock, listen),) = peer.adopted
    assert listen == LISTEN
    sock.settimeout(5)
    assert sock.recv(100) == b"AUTH before the pass"
    sock.sendall(b"401")
    assert client.recv(100) == b"401"
    assert me.counters.values[Counter.conns_passed] == 1
    assert peer.counters.values[Counter.conns_adopted] == 1


def test_what_was_passed_counts_until_the_peer_takes_it_up(world) -> None:  # type: ignore[no-untyped-def]
    me, peer, hb, net = world
    running(hb, 0, 2)
    running(hb, 1, 0)
    me.balancer.refresh()
    first, second, third = (net.connect()[0] for _ in range(3))
    assert me.balancer.offer(first, 2, LISTEN)  # peer at 0
    assert me.balancer.offer(second, 2, LISTEN)  # peer at 0 + 1 passed
    assert not me.balancer.offer(third, 2, LISTEN)  # peer at 0 + 2: as many as we hold
    assert not third.is_closing()
    running(hb, 1, 2)  # it took both up
    assert not me.balancer.offer(third, 2, LISTEN)
    running(hb, 1, 1)  # one closed since: its own count is what counts now
    assert me.balancer.offer(third, 2, LISTEN)
    assert peer.inbox.receive() == 3


def test_no_pass_to_a_peer_as_loaded_or_gone(world) -> None:  # type: ignore[no-untyped-def]
    me, peer, hb, net = world
    running(hb, 0, 3)
    running(hb, 1, 3)
    me.balancer.refresh()
    transport, _client = net.connect()
    assert not me.balancer.offer(transport, 3, LISTEN)
    running(hb, 1, 0)
    peer.balancer.close()  # its accept socket is gone: the send fails
    assert not me.balancer.offer(transport, 3, LISTEN)
    assert not transport.is_closing()
    assert me.counters.values[Counter.conns_passed] == 0


def test_peers_are_the_running_workers_of_our_generation(world) -> None:  # type: ignore[no-untyped-def]
    me, _peer, hb, _net = world
    hb.claim(2, 102, slot=2, generation=2)  # a newer generation
    hb.claim(3, 103, slot=3, generation=1)  # ours, but still booting
    for index in (0, 1, 2):
        running(hb, index, 0)
    me.balancer.refresh()
    assert [(i, slot) for i, slot, _ in me.balancer.peers] == [(1, 1)]
    assert me.balancer.index_of((1, 1)) == 1
    assert me.balancer.index_of((2, 2)) is None
    assert me.balancer.index_of((3, 1)) is None
    running(hb, 3, 0)
    me.balancer.refresh()
    assert me.balancer.index_of((3, 1)) == 3


def _send(path: Path, message: bytes, fds: list[int]) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        out.sendmsg([message], rights, 0, str(path))


def _closed_by_the_inbox(client: socket.socket) -> bool:
    return client.recv(1) == b""


def test_a_batch_is_served_in_order_and_bad_datagrams_close_what_they_carry(world) -> None:  # type: ignore[no-untyped-def]
    _me, peer, _hb, net = world
    path = peer.inbox.path
    good = MoveState(1, (0, 1), LISTEN, [], {}, (0, 0, 0, 0), 0.0, 0.0, 1, 1, b"").encode()
    assert good is not None
    pairs = [net.connect() for _ in range(2)]
    socks = [t.get_extra_info("socket").fileno() for t, _ in pairs]
    _send(path, encode_batch([good, good + b"second"]), socks)
    assert peer.inbox.receive() == 2
    assert [m for _, m in peer.moved] == [good, good + b"second"]
    for (sock, _), (_, client) in zip(peer.moved, pairs, strict=True):
        sock.sendall(b"x")
        assert client.recv(1) == b"x"  # each descriptor with its own message
    bad = [
        (encode_batch([good]), 2),  # one state for two connections
        (b"Xwhat", 1),  # an unknown kind
        (encode_moved(b"{not json"), 1),  # a move whose state does not parse
    ]
    for message, count in bad:
        pairs = [net.connect() for _ in range(count)]
        _send(path, message, [t.get_extra_info("socket").fileno() for t, _ in pairs])
        for transport, _ in pairs:
            transport.abort()  # the inbox holds the only other copy
        net.loop.run_until_complete(asyncio.sleep(0))
        assert peer.inbox.receive() == count
        assert all(_closed_by_the_inbox(client) for _, client in pairs), message
    left, right = socket.socketpair()  # a descriptor that is no TCP socket
    _send(path, encode_passed(LISTEN), [right.fileno()])
    right.close()
    assert peer.inbox.receive() == 1
    left.settimeout(5)
    assert left.recv(1) == b""
    left.close()
    _send(path, encode_passed(LISTEN), [])  # no descriptor at all: ignored
    assert peer.inbox.receive() == 0
    assert len(peer.moved) == 2 and peer.adopted == []


def test_shut_serves_what_was_queued_and_takes_nothing_more(world) -> None:  # type: ignore[no-untyped-def]
    me, peer, hb, net = world
    running(hb, 0, 5)
    running(hb, 1, 0)
    me.balancer.refresh()
    first, second = net.connect()[0], net.connect()[0]
    assert me.balancer.offer(first, 5, LISTEN)
    assert peer.balancer.shut()  # one was queued: served
    assert len(peer.adopted) == 1 and not peer.inbox.path.exists()
    assert not me.balancer.offer(second, 5, LISTEN)  # nothing more can come
    assert not peer.balancer.shut()
