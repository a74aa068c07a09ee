"""The relay's own URIs and loops, with real processes and sockets (issue 12, item 9).

Both ends AUTH at one msrpd and chat through `<R/sidA> <R/sidB> <peer>`: the second hop is the
relay itself, so the frame is routed again inside it, never over a TCP connection to itself
(none is opened: no outbound connection in msrp.conns, no connection beyond the clients'),
with small and 10 MiB bodies, both ends on different workers. A To-Path naming the relay 450
times is refused with one 403 and costs no relay hop.
"""

from __future__ import annotations

import time

import pytest

from msrpd.protocol.writer import build_request
from msrpd.rundir import layout_for
from msrpd.shm import ShmSet

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay
from .test_balance import COUNTERS_PUBLISHED
from .test_flow_cycle import both_ways, conns, split_pair

MIB = 1 << 20


def _stat(shm: ShmSet, name: str) -> int:
    return int(shm.stats.total()[name])


def _started(make_relay) -> tuple[Relay, ShmSet]:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, core={"balance": False})
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    return relay, layout_for(relay.settings()).attach_all()


def test_both_ends_here_chat_through_their_use_paths_with_no_self_connection(
    make_relay,  # type: ignore[no-untyped-def]
) -> None:
    relay, shm = _started(make_relay)
    try:
        alice, bob = split_pair(relay)
        assert alice.use_path and bob.use_path
        wait = time.monotonic() + 5
        while len(conns(relay)) != 2 and time.monotonic() < wait:
            time.sleep(0.05)  # the closed extra clients
        time.sleep(COUNTERS_PUBLISHED)
        opened = _stat(shm, "conns_total")
        to_bob = [alice.use_path, bob.use_path, bob.uri]
        to_alice = [bob.use_path, alice.use_path, alice.uri]
        # Small messages, one way then the other: one 200 each (none for the inner hop), the
        # frame as Bob must see it (RFC 4976 §6.2: each hop moved to the front of From-Path).
        for sender, receiver, path in ((alice, bob, to_bob), (bob, alice, to_alice)):
            tids = []
            for i in range(5):
                body = b"message %d" % i
                headers = [("Message-ID", f"m{i}"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
                headers.append(("Content-Type", "text/plain"))
                tid = new_tid()
                sender.send_raw(build_request(tid, b"SEND", path, [sender.uri], headers, body))
                tids.append(tid)
            assert [(f.tid, f.code) for f in (sender.recv().frame for _ in tids)] == [
                (t, 200) for t in tids
            ]
            got = [receiver.recv() for _ in tids]
            assert [g.body for g in got] == [b"message %d" % i for i in range(5)]
            assert {tuple(g.frame.to_path) for g in got} == {(receiver.uri,)}
            assert {tuple(g.frame.from_path) for g in got} == {(path[1], path[0], sender.uri)}
        # 10 MiB bodies (streamed: over max_body), both ways at once, twice.
        for n in range(2):
            both_ways(alice, bob, to_bob, to_alice, bytes([n + 1]) * (10 * MIB))
        for client in (alice, bob):  # nothing more came: no second 200, no copy
            client.sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                client.sock.recv(1)
        rows = conns(relay)
        assert len(rows) == 2 and all(r["local"] for r in rows), rows  # no outbound connection
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_total") == opened  # the listen port got no new connection
        assert _stat(shm, "handoffs_out") == _stat(shm, "handoffs_in") > 0  # across workers
        assert _stat(shm, "relay_fail") == _stat(shm, "loops_refused") == 0
        alice.close()
        bob.close()
    finally:
        shm.close()


def test_a_failure_on_the_inner_hop_reaches_the_sender_as_a_report(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay, shm = _started(make_relay)
    try:
        with MsrpClient(relay.port, timeout=10) as alice:
            assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
            assert alice.use_path
            gone = alice.relay_uri.replace(";tcp", "/no-such-session;tcp")
            headers = [("Message-ID", "lost"), ("Byte-Range", "1-5/5")]
            headers.append(("Content-Type", "text/plain"))
            tid = new_tid()
            path = [alice.use_path, gone, "msrp://127.0.0.1:9/bob;tcp"]
            alice.send_raw(build_request(tid, b"SEND", path, [alice.uri], headers, b"hello"))
            ok, report = alice.recv().frame, alice.recv().frame
            assert (ok.tid, ok.code) == (tid, 200)
            assert (
                report.method == b"REPORT"
                and report.header("Status") == b"000 481 Session Does Not Exist"
            )
            assert report.message_id == b"lost"
            assert report.to_path == [alice.uri]
        time.sleep(COUNTERS_PUBLISHED)
        assert _stat(shm, "conns_total") == 1 and _stat(shm, "frames_out") == 0
    finally:
        shm.close()


def test_a_to_path_naming_the_relay_450_times_is_refused_at_no_cost(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay, shm = _started(make_relay)
    try:
        with MsrpClient(relay.port, timeout=10) as alice:
            assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
            time.sleep(COUNTERS_PUBLISHED)
            before = {n: _stat(shm, n) for n in ("frames_out", "conns_total", "handoffs_out")}
            us = f"msrp://127.0.0.1:{relay.port}/x;tcp"  # short: 450 of them fit in max_head
            loop = [us] * 450 + ["msrp://127.0.0.1:9/bob;tcp"]
            headers = [("Message-ID", "loop"), ("Byte-Range", "1-4/4")]
            headers.append(("Content-Type", "text/plain"))
            tid = new_tid()
            alice.send_raw(build_request(tid, b"SEND", loop, [alice.uri], headers, b"loop"))
            # Neither a REPORT nor a SEND with Failure-Report: no gets a response.
            alice.send_raw(
                build_request(
                    new_tid(),
                    b"SEND",
                    loop,
                    [alice.uri],
                    [*headers[:1], ("Failure-Report", "no"), *headers[1:]],
                    b"loop",
                )
            )
            report_headers = [
                ("Message-ID", "loop"),
                ("Byte-Range", "1-4/4"),
                ("Status", "000 200 OK"),
            ]
            alice.send_raw(build_request(new_tid(), b"REPORT", loop, [alice.uri], report_headers))
            answer = alice.recv().frame
            assert (answer.tid, answer.code) == (tid, 403)
            # The connection is still served; the three frames got exactly one response.
            assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
        time.sleep(COUNTERS_PUBLISHED)
        after = {n: _stat(shm, n) for n in before}
        assert after == before  # no relay hop, no connection, no handoff
        assert _stat(shm, "loops_refused") == 3
        assert "names this relay 450 times" in relay.log()
    finally:
        shm.close()


def test_inner_hops_are_capped_whatever_the_route_does(make_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A route that forwards every request to the relay itself again, forever: after
    MAX_LOCAL_HOPS inner hops relay() fails, once, at no connection and no relay hop."""
    relay: Relay = make_relay(children=1)
    us = f"msrp://127.0.0.1:{relay.port}/x;tcp"
    script = tmp_path / "loop.py"
    script.write_text(
        "def ksr_msrp_event(msrp):\n"
        "    if msrp.method == 'SEND':\n"
        f"        msrp.forward('{us} {us}')\n"
    )
    relay.sections["msrp"]["route"] = str(script)
    relay.write_config()
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    shm = layout_for(relay.settings()).attach_all()
    try:
        with MsrpClient(relay.port, timeout=10) as alice:
            headers = [("Message-ID", "m"), ("Byte-Range", "1-2/2"), ("Content-Type", "text/plain")]
            path = [us, "msrp://127.0.0.1:9/bob;tcp"]
            alice.send_raw(build_request(new_tid(), b"SEND", path, [alice.uri], headers, b"hi"))
            time.sleep(COUNTERS_PUBLISHED)
            assert _stat(shm, "loops_refused") == 1
            assert _stat(shm, "frames_out") == 0 and _stat(shm, "conns_total") == 1
            assert "more than 2 hops through this relay" in relay.log()
            alice.sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                alice.sock.recv(1)  # nothing was sent to Alice, and she is still connected
    finally:
        shm.close()
