"""A next hop's connection that closes before it answers (rfc-checklist §4.5, issue 14): the
transactions of the requests that went out on it fail at once, not at transaction_timeout.

Live msrpd with two workers (conftest.start_relay), transaction_timeout left at 30 s so that
only the close can explain a failure within a second. The sender hears what it would for an
unreachable next hop: a REPORT for a SEND that asked for failure reports (yes, partial), a
response to an AUTH, nothing for Failure-Report no or an unknown method; 408 for a next hop
the relay connected to, 481 for a session whose client went away. The next hop on the
worker that owns the transactions, on the other worker (told over the handoff link), and one
that colocation moved (its transactions stay matched, and fail when it closes later).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msrpd.control.workerctl import WorkerCtlError, query_worker
from msrpd.protocol import Frame, build_reply
from msrpd.rundir import ctl_path

from ..integration.relay import PASSWORDS, REALM
from ..integration.test_flow_cycle import slot_of
from ..msrpclient import MsrpClient, Received
from .conftest import Net, start_relay
from .test_transactions import QUIET, Peer, _forwarded, _nothing, _send, _stats

FAST = 1.5
"""Seconds within which the close is told: the timeout (30 s) cannot explain it."""
CLOSE_ROUTE = '''
def ksr_msrp_event(msrp):
    """The cmap route with t_reply and t_relay: AUTH over plain TCP (so that a client's
    connection may move), every request to a session forwarded statefully."""
    if msrp.is_reply():
        msrp.t_relay()
        return
    if msrp.method == "AUTH" and msrp.nexthops == 0:
        realm = msrp.env.policy.realm
        if not msrp.www_authenticate(realm):
            msrp.t_reply(401, "Unauthorized", msrp.www_challenge(realm))
            return
        msrp.cmap_save()
        return
    if msrp.cmap_lookup() <= 0:
        msrp.t_reply(481, "Session Does Not Exist")
        return
    if msrp.method == "SEND":
        msrp.t_reply(200, "OK")
    msrp.t_relay()
'''


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    found = start_relay(tmp_path)  # transaction_timeout: the default 30 s
    yield from _stopped_after(found)


@pytest.fixture
def cmap_net(tmp_path: Path) -> Iterator[Net]:
    route = tmp_path / "txroute.py"
    route.write_text(CLOSE_ROUTE)
    found = start_relay(tmp_path, route=str(route))
    yield from _stopped_after(found)


_OPEN: list[MsrpClient] = []


def _stopped_after(found: Net) -> Iterator[Net]:
    try:
        yield found
    finally:
        while _OPEN:  # before the stop, which would wait drain_timeout for them
            _OPEN.pop().close()
        found.relay.stop()


def _placed(net: Net, make: Callable[[], MsrpClient], slot: int | None, same: bool) -> MsrpClient:
    """A client from `make` on worker `slot` (`same`) or on another one."""
    for _ in range(40):
        client = make()
        where = slot_of(net.relay, client.sock)
        if where is not None and (slot is None or (where == slot) == same):
            _OPEN.append(client)
            return client
        client.close()
    raise AssertionError("40 connections and none landed where wanted")


def _requests(alice: MsrpClient, to_path: str) -> dict[str, bytes]:
    """A's five requests, in this order: SENDs with Failure-Report yes, partial and no, an
    AUTH and a FOO. The 200 for the `yes` SEND is read."""
    sent = {
        fr: _send(alice, to_path, f"m-{fr}", b"x" * 10, fr=fr) for fr in ("yes", "partial", "no")
    }
    ok = alice.recv().frame
    assert (ok.tid, ok.code) == (sent["yes"], 200)
    sent["auth"] = alice.request("AUTH", to_path)
    sent["foo"] = alice.request("FOO", to_path)
    return sent


def _received(recv: Callable[[], Frame], sent: dict[str, bytes], to: str, frm: str) -> list[Frame]:
    """The next hop got the five, in order, each once, under new ids."""
    got = [recv() for _ in sent]
    for frame, (what, tid) in zip(got, sent.items(), strict=True):
        _forwarded(frame, tid, to, frm)
        assert frame.method == (what.upper().encode() if what in ("auth", "foo") else b"SEND")
    return got


def _told(alice: MsrpClient, sent: dict[str, bytes], code: int, reason: str, closed: float) -> None:
    """What A hears once the next hop closed: REPORTs for the yes and partial SENDs, then the
    AUTH's response, all within FAST seconds; nothing for the no SEND or the FOO."""
    token = alice.use_path or ""
    got: list[Received] = [alice.recv(FAST + 1) for _ in range(3)]
    assert time.monotonic() - closed < FAST
    for item, fr in zip(got[:2], ("yes", "partial"), strict=True):
        report = item.frame
        assert report.method == b"REPORT" and report.tid not in sent.values()
        assert report.header("Status") == f"000 {code} {reason}".encode()
        assert (report.message_id, report.header("Byte-Range")) == (f"m-{fr}".encode(), b"1-10/10")
        assert (report.to_path, report.from_path) == ([alice.uri], [token])
    auth = got[2].frame
    assert (auth.tid, auth.code, auth.reason) == (sent["auth"], code, reason.encode())
    assert (auth.to_path, auth.from_path) == ([alice.uri], [token])
    _nothing(alice, wait=QUIET)


def test_next_hop_closing_fails_its_transactions_at_once(net: Net) -> None:
    """A (TLS, its token TA) sends `TA b` to B, a next hop the relay connects to (on A's
    worker) that never answers; B's connection closes: A gets REPORT 408 for the yes and
    partial SENDs and a 408 to its AUTH within a second; nothing for no or FOO, then or when
    the timeout would have come."""
    peer = Peer()
    alice = _placed(net, net.authed, None, True)
    token = alice.use_path or ""
    sent = _requests(alice, f"{token} {peer.uri}")
    _received(peer.recv, sent, peer.uri, f"{token} {alice.uri}")
    _nothing(alice)  # B has not answered: nothing yet (partial: no 200)
    peer.close()
    _told(alice, sent, 408, "Request Timeout", time.monotonic())
    stats = _stats(net.relay)
    assert (stats["tx_hop_closed"], stats["tx_timeouts"], stats["tx_unmatched"]) == (4, 0, 0)


@pytest.mark.parametrize("apart", [False, True], ids=["same-worker", "across-workers"])
def test_session_closing_fails_its_transactions_at_once(net: Net, apart: bool) -> None:
    """`TA TB b`: Bob (AUTHed, token TB) on A's worker or on the other; he reads A's five
    requests and closes without answering: A gets REPORT 481 for the yes and partial SENDs
    and a 481 to its AUTH within a second (across workers: Bob's worker tells A's)."""
    alice = _placed(net, net.authed, None, True)
    bob = _placed(net, lambda: net.authed("bob"), slot_of(net.relay, alice.sock), not apart)
    ta, tb = alice.use_path or "", bob.use_path or ""
    sent = _requests(alice, f"{ta} {tb} {bob.uri}")
    _received(lambda: bob.recv().frame, sent, bob.uri, f"{tb} {ta} {alice.uri}")
    _nothing(alice)
    bob.close()
    _told(alice, sent, 481, "Session Does Not Exist", time.monotonic())
    stats = _stats(net.relay)
    assert (stats["tx_hop_closed"], stats["tx_timeouts"], stats["tx_unmatched"]) == (4, 0, 0)


def _cmap_client(net: Net, user: str, tls: bool) -> MsrpClient:
    client = net.client() if tls else net.plain()
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def test_a_next_hop_that_moves_keeps_its_transactions(cmap_net: Net) -> None:
    """Colocation moves B (plain TCP) to A's worker while A's three SENDs to B (Failure-Report
    yes, partial, yes) wait for his answers (A over TLS: it cannot move). The move fails
    nothing; B's 200 and 486 for the first two are matched after it (the 486 becomes A's
    REPORT); B's close fails the third at once with 481 (it went out on B's id before the
    move)."""
    net = cmap_net
    alice = _placed(net, lambda: _cmap_client(net, "alice", True), None, True)
    home = slot_of(net.relay, alice.sock)
    bob = _placed(net, lambda: _cmap_client(net, "bob", False), home, False)
    ta, tb = alice.use_path or "", bob.use_path or ""
    frs = ("yes", "partial", "yes")
    sent = [_send(alice, f"{tb} {bob.uri}", f"m{n}", b"abc", fr=fr) for n, fr in enumerate(frs)]
    assert [alice.recv().frame.tid for _ in range(2)] == [sent[0], sent[2]]  # the 200s
    got = [bob.recv().frame for _ in sent]
    for frame, tid in zip(got, sent, strict=True):
        _forwarded(frame, tid, bob.uri, f"{tb} {alice.uri}")
    # B talks to A until colocation moves him to A's worker (Failure-Report no: nothing
    # comes back to B, and every one of them reaches A).
    deadline, n = time.monotonic() + 20, 0
    while slot_of(net.relay, bob.sock) != home:
        assert time.monotonic() < deadline, "B never moved to A's worker"
        for _ in range(20):
            _send(bob, f"{ta} {alice.uri}", f"b{n}", b"hi", fr="no")
            n += 1
        for i in range(n - 20, n):
            assert alice.recv().frame.message_id == f"b{i}".encode()
        time.sleep(0.2)
    _nothing(alice, bob)  # the move failed nothing
    _answered_then_closed(net, alice, bob, got, tb, b"m")
    assert _stats(net.relay)["conns_moved"] >= 1


def _answered_then_closed(
    net: Net, alice: MsrpClient, bob: MsrpClient, got: list[Frame], tb: str, prefix: bytes
) -> None:
    """B, moved (colocation, a reload's handover) since A's three SENDs (Message-IDs
    prefix + 0..2) went out to it, answers the first 200 and the second 486 (A's REPORT
    486), then closes: the third fails at once (481), and nothing else happened to the
    transactions."""
    bob.send_raw(build_reply(got[0], 200, "OK"))
    bob.send_raw(build_reply(got[1], 486, "Busy Here"))
    report = alice.recv().frame
    assert report.method == b"REPORT" and report.header("Status") == b"000 486 Busy Here"
    assert (report.message_id, report.to_path, report.from_path) == (
        prefix + b"1",
        [alice.uri],
        [tb],
    )
    _nothing(alice)
    bob.close()
    closed = time.monotonic()
    report = alice.recv(FAST + 1).frame
    assert time.monotonic() - closed < FAST
    assert report.header("Status") == b"000 481 Session Does Not Exist"
    assert (report.message_id, report.header("Byte-Range")) == (prefix + b"2", b"1-3/3")
    _nothing(alice)
    stats = _stats(net.relay)
    assert (stats["tx_hop_closed"], stats["tx_timeouts"], stats["tx_unmatched"]) == (1, 0, 0)


def _in_generation(net: Net, client: MsrpClient, generation: int) -> bool:
    """`client`'s connection is served by a worker of `generation`."""
    port = client.sock.getsockname()[1]
    run_dir = net.relay.settings().core.run_dir
    for slot in range(net.relay.settings().core.children):
        try:
            rows = query_worker(ctl_path(run_dir, slot, generation), "conns")
        except WorkerCtlError:
            continue  # not up yet
        if any(row["peer"].endswith(f":{port}") for row in rows):
            return True
    return False


def test_a_next_hop_handed_over_by_a_reload_keeps_its_transactions(cmap_net: Net) -> None:
    """A reload hands B (plain TCP) to the new generation while A's three SENDs to B wait
    (A, over TLS, stays with its old worker, which owns the transactions). The handover
    fails nothing; B's 200 and 486 come from the new worker and are matched (the 486 becomes
    A's REPORT); B's close there fails the third at once: the new worker tells the old."""
    net = cmap_net
    alice = _placed(net, lambda: _cmap_client(net, "alice", True), None, True)
    bob = _placed(net, lambda: _cmap_client(net, "bob", False), None, True)
    tb = bob.use_path or ""
    frs = ("yes", "partial", "yes")
    sent = [_send(alice, f"{tb} {bob.uri}", f"r{n}", b"abc", fr=fr) for n, fr in enumerate(frs)]
    assert [alice.recv().frame.tid for _ in range(2)] == [sent[0], sent[2]]  # the 200s
    got = [bob.recv().frame for _ in sent]
    for frame, tid in zip(got, sent, strict=True):
        _forwarded(frame, tid, bob.uri, f"{tb} {alice.uri}")
    assert net.relay.cli("reload").returncode == 0, net.relay.log()
    deadline = time.monotonic() + 20
    while not _in_generation(net, bob, 2):
        assert time.monotonic() < deadline, "B was not handed to the new generation"
        time.sleep(0.1)
    assert not _in_generation(net, alice, 2)  # TLS: with the old worker, which lives on
    _nothing(alice, bob)  # the handover failed nothing
    _answered_then_closed(net, alice, bob, got, tb, b"r")
