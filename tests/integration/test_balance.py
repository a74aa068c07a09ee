"""Accept balancing (msrpd/workers/migrate/balance.py) with real workers, sockets and shared memory.

SO_REUSEPORT picks the accepting worker by hash, so a handful of connections can land 6/2.
A worker holding more than the least loaded one passes each new plain TCP connection over
(SCM_RIGHTS): whatever the hash did, the open connections end up within one of each other,
every passed connection is served (bytes sent before the pass included), and nothing is lost.
"""

from __future__ import annotations

import array
import socket
import time

from msrpd.control.workerctl import query_worker
from msrpd.protocol import Frame, FrameReader
from msrpd.protocol.writer import build_request
from msrpd.rundir import ctl_path, layout_for
from msrpd.shm import ShmSet, WorkerState

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for

COUNTERS_PUBLISHED = 1.5  # seconds: workers publish their counters once a second


def _running_records(shm: ShmSet) -> list[int]:
    return [r.index for r in shm.heartbeats.all() if r.state is WorkerState.RUNNING and r.pid != 0]


def _started(make_relay, children: int) -> tuple[Relay, ShmSet]:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=children)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    shm = layout_for(relay.settings()).attach_all()
    wait_for(lambda: len(_running_records(shm)) == children, what="workers running")
    time.sleep(COUNTERS_PUBLISHED)  # each worker has seen the others RUNNING
    return relay, shm


def _open_counts(shm: ShmSet) -> list[int]:
    return sorted(shm.heartbeats.conns(i) for i in _running_records(shm))


def _stat(shm: ShmSet, name: str) -> int:
    return int(shm.stats.total()[name])


def _owner_slots(relay: Relay, children: int) -> dict[int, int]:
    """Local port of each client connection -> the worker slot that serves it."""
    run_dir = relay.settings().core.run_dir
    return {
        int(conn["peer"].rsplit(":", 1)[1]): slot
        for slot in range(children)
        for conn in query_worker(ctl_path(run_dir, slot, 1), "conns")
    }


def _authed(relay: Relay, user: str) -> MsrpClient:
    client = MsrpClient(relay.port)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def test_connections_spread_within_one_and_all_relay(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay, shm = _started(make_relay, 2)
    clients: list[MsrpClient] = []
    try:
        pairs = [(_authed(relay, "alice"), _authed(relay, "bob")) for _ in range(12)]
        clients = [client for pair in pairs for client in pair]
        counts = _open_counts(shm)
        assert counts == [12, 12], counts  # within one, whatever the hash did
        for n, (alice, bob) in enumerate(pairs):
            body = b"balanced %d" % n
            alice.send_message(bob, body, f"m{n}")
            got = bob.recv(5).frame
            assert got.method == b"SEND" and bytes(got.body or b"") == body
        time.sleep(COUNTERS_PUBLISHED)
        passed, adopted = _stat(shm, "conns_passed"), _stat(shm, "conns_adopted")
        assert passed == adopted
        # Now uneven on purpose: worker 1 loses all its clients, worker 0 keeps 12. Each of
        # 12 new clients lands wherever the hash says, and every one the hash gives worker 0
        # must be passed: all 12 end up on worker 1 (the hash gives none of them to worker 0
        # only once in 4096 runs).
        owners = _owner_slots(relay, 2)
        for client in [c for c in clients if owners[c.sock.getsockname()[1]] == 1]:
            client.close()
            clients.remove(client)
        wait_for(lambda: sorted(_open_counts(shm)) == [0, 12], what="worker 1 emptied")
        fresh = [_authed(relay, "alice") for _ in range(12)]
        clients.extend(fresh)
        owners = _owner_slots(relay, 2)
        assert [owners[c.sock.getsockname()[1]] for c in fresh] == [1] * 12
        time.sleep(COUNTERS_PUBLISHED)
        passed_now = _stat(shm, "conns_passed") - passed
        adopted_now = _stat(shm, "conns_adopted") - adopted
        assert passed_now == adopted_now and 0 < passed_now <= 12, (passed_now, adopted_now)
        print(f"connections passed between workers: {passed} then {passed_now}")
        for client in clients:
            client.close()
        wait_for(lambda: sum(_open_counts(shm)) == 0, what="every connection closed")
    finally:
        for client in clients:
            client.close()
        shm.close()


def test_bytes_sent_before_the_pass_are_served(make_relay) -> None:  # type: ignore[no-untyped-def]
    """Each client writes its AUTH in the same moment it connects, before the relay could
    have read anything: wherever its connection ends up, the 401 challenge comes back."""
    relay, shm = _started(make_relay, 2)
    socks = []
    try:
        auth = build_request(b"t1", b"AUTH", [f"msrp://127.0.0.1:{relay.port};tcp"], ["msrp://c"])
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", relay.port))
            sock.sendall(auth)
            socks.append(sock)
        for sock in socks:
            sock.settimeout(5)
            reader = FrameReader()
            frames: list[Frame] = []
            while not frames:
                data = sock.recv(65536)
                assert data, "connection closed without an answer"
                reader.receive_data(data)
                frames = [e for e in reader.events() if isinstance(e, Frame)]
            assert frames[0].code == 401 and frames[0].tid == b"t1"
        counts = _open_counts(shm)
        # Both workers accept at once in a burst, each with a moment-old view of the other:
        # the split can overshoot by a few (one at a time it is within one, test above).
        assert sum(counts) == 40 and counts[-1] - counts[0] <= 6, counts
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_passed") == _stat(shm, "conns_adopted") > 0
    finally:
        for sock in socks:
            sock.close()
        shm.close()


def test_one_worker_passes_nothing(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay, shm = _started(make_relay, 1)
    try:
        clients = [MsrpClient(relay.port) for _ in range(5)]
        for client in clients:
            assert client.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
        assert _open_counts(shm) == [5]
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_passed") == _stat(shm, "conns_adopted") == 0
        for client in clients:
            client.close()
    finally:
        shm.close()


def _pass_to_worker(relay: Relay, message: bytes, fd: int | None) -> None:
    """Send what a worker's accept socket reads: a message, with a descriptor or without."""
    path = relay.settings().core.run_dir / "accept-0-1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
        rights = (
            [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        )
        out.sendmsg([message], rights, 0, str(path))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def test_bad_messages_on_the_accept_socket_close_what_they_carry(make_relay) -> None:  # type: ignore[no-untyped-def]
    """Each bad message gets a defined outcome: the descriptor it carries is closed (its
    peer sees EOF), nothing is served from it, and the worker keeps serving."""
    relay, shm = _started(make_relay, 2)
    peers = []
    try:
        bad = [
            b"M{not json",  # a move whose state does not parse
            b'M{"old": 1}\n',  # a move missing its fields
            b"Xwhat",  # an unknown kind
        ]
        for message in bad:
            client, accepted = _tcp_pair()
            _pass_to_worker(relay, message, accepted.fileno())
            accepted.close()  # the worker holds the only other copy
            client.settimeout(5)
            assert client.recv(1) == b"", message  # closed by the worker
            peers.append(client)
        left, right = socket.socketpair()  # a descriptor that is no TCP socket
        _pass_to_worker(relay, b"Atcp:127.0.0.1:1", right.fileno())
        right.close()
        left.settimeout(5)
        assert left.recv(1) == b""
        peers.append(left)
        _pass_to_worker(relay, b"Atcp:127.0.0.1:1", None)  # no descriptor at all
        wait_for(lambda: "message without a connection" in relay.log(), what="the last logged")
        assert relay.log().count("another worker passed") == 4  # one line per refusal
        with MsrpClient(relay.port) as client:  # still serving
            assert client.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
            assert sum(_open_counts(shm)) == 1  # the refused ones were never counted
    finally:
        for peer in peers:
            peer.close()
        shm.close()
