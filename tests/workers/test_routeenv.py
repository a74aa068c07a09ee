"""RouteRunner (routeenv.py) and ConnEnv (connenv.py) on real connections: the frame being routed is
passed down as an argument, so what a relay does, and what its failure tells the sender,
follows that frame (RFC 4975 §7.1.2, RFC 4976 §6.4.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from msrpd.config.address import parse_listen
from msrpd.config.selfuri import SelfUris
from msrpd.protocol import ReaderLimits
from msrpd.routing import Destination, Msrp
from msrpd.shm import Counter
from msrpd.workers.handoff import make_conid

from .routepath import Worker, read_frames, send, until

NOWHERE = make_conid(0, 1, 999_999)
"""A connection id of this worker (slot 0, generation 1) that no connection has."""


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def relay_to(msrp: Msrp, conid: int) -> int:
    return msrp.env.relay(msrp.frame, bytes(msrp.frame.buf), Destination(None, conid), 0)


def test_a_relayed_frame_reaches_its_destination_and_the_sender_its_200() -> None:
    async def main() -> None:
        dest: list[int] = []

        def script(msrp: Msrp) -> None:
            msrp.reply(200, "OK")
            assert relay_to(msrp, dest[0]) == 1

        worker = Worker(script)
        _alice, alice_peer = await worker.connect()
        bob, bob_peer = await worker.connect()
        dest.append(bob.conid)
        await worker.loop.sock_sendall(alice_peer, send("t1"))
        (relayed,) = await read_frames(bob_peer, 1)
        assert (relayed.tid, relayed.method, relayed.body) == (b"t1", b"SEND", b"hello")
        (answer,) = await read_frames(alice_peer, 1)
        assert (answer.tid, answer.code) == (b"t1", 200)
        counters = worker.ctx.counters.fold()
        assert counters[Counter.frames_out] == 1 and counters[Counter.replies_2xx] == 1
        assert bob.out.sent_log.relayed  # a relayed frame: a stop reports it if never sent
        alice_peer.close()
        bob_peer.close()

    run(main())


def test_a_relay_that_fails_after_the_200_is_reported_to_the_sender() -> None:
    async def main() -> None:
        def script(msrp: Msrp) -> None:
            msrp.reply(200, "OK")
            assert relay_to(msrp, NOWHERE) == -1

        worker = Worker(script)
        _alice, alice_peer = await worker.connect()
        await worker.loop.sock_sendall(alice_peer, send("t1"))
        ok, report = await read_frames(alice_peer, 2)
        assert (ok.tid, ok.code) == (b"t1", 200)
        assert report.method == b"REPORT" and report.header("Message-ID") == b"m-t1"
        assert report.header("Status") == b"000 481 Not Delivered"
        assert report.to_path == ["msrp://alice:9/a;tcp"]
        assert report.from_path == ["msrp://relay:2855/sB;tcp"]
        assert worker.ctx.counters.values[Counter.relay_fail] == 1
        alice_peer.close()

    run(main())


def test_a_failure_the_route_answers_itself_or_no_report_wanted_gets_no_report() -> None:
    async def main() -> None:
        def script(msrp: Msrp) -> None:
            if msrp.frame.tid == b"t1":
                assert relay_to(msrp, NOWHERE) == -1  # not answered yet: the route tells
                msrp.reply(481, "Session Does Not Exist")
            elif msrp.frame.tid == b"t2":
                msrp.reply(200, "OK")
                assert relay_to(msrp, NOWHERE) == -1  # answered, but no REPORT wanted
            else:
                msrp.reply(200, "OK")  # the next frame alice gets: no REPORT came before

        worker = Worker(script)
        _alice, alice_peer = await worker.connect()
        refused = send("t1")
        unwanted = send("t2", headers="Failure-Report: no\r\n")
        await worker.loop.sock_sendall(alice_peer, refused + unwanted + send("t3"))
        answers = await read_frames(alice_peer, 3)
        assert [(f.tid, f.code, f.method) for f in answers] == [
            (b"t1", 481, None),
            (b"t2", 200, None),
            (b"t3", 200, None),
        ]
        assert worker.ctx.counters.values[Counter.relay_fail] == 2
        alice_peer.close()

    run(main())


def test_a_script_error_answers_500_and_is_counted() -> None:
    async def main() -> None:
        def script(msrp: Msrp) -> None:
            raise RuntimeError("bug in the route")

        worker = Worker(script)
        _alice, alice_peer = await worker.connect()
        await worker.loop.sock_sendall(alice_peer, send("t1"))
        (answer,) = await read_frames(alice_peer, 1)
        assert (answer.tid, answer.code) == (b"t1", 500)
        assert worker.ctx.counters.values[Counter.errors] == 1
        alice_peer.close()

    run(main())


def test_a_streamed_frame_follows_its_head_and_its_200_waits_for_its_end() -> None:
    async def main() -> None:
        dest: list[int] = []
        heads: list[bool] = []

        def script(msrp: Msrp) -> None:
            heads.append(msrp.frame.streamed)
            msrp.reply(200, "OK")
            assert msrp.relay_flags(2) and relay_to(msrp, dest[0]) == 1  # flag 2 ignored

        worker = Worker(script, limits=ReaderLimits(max_body=64))
        alice, alice_peer = await worker.connect()
        bob, bob_peer = await worker.connect()
        dest.append(bob.conid)
        body = bytes(range(256)) * 8
        data = send("t1", body)
        await worker.loop.sock_sendall(alice_peer, data[:-300])
        await until(lambda: alice.stream_sink is not None)
        assert heads == [True] and alice.intake.held_replies  # the 200 waits for the end-line
        await worker.loop.sock_sendall(alice_peer, data[-300:])
        (relayed,) = await read_frames(bob_peer, 1)
        assert relayed.body == body and relayed.flag == b"$"
        (answer,) = await read_frames(alice_peer, 1)
        assert answer.code == 200 and not bob.closed  # CLOSE_AFTER does not cut a stream
        alice_peer.close()
        bob_peer.close()

    run(main())


def test_an_inner_hop_through_our_own_uri_reports_the_outer_frame() -> None:
    """relay() to a URI of ours routes again here (loopback.py); when the inner hop's relay
    fails after the outer 200, the sender's REPORT names the frame it sent."""

    async def main() -> None:
        def script(msrp: Msrp) -> None:
            if msrp.frame.to_path[0].endswith("/sA;tcp"):
                msrp.reply(200, "OK")
                assert msrp.relay() == -1  # the inner hop did not relay
            else:
                assert relay_to(msrp, NOWHERE) == -1

        self_uris = SelfUris.build([parse_listen("tcp:127.0.0.1:2855")])
        worker = Worker(script, self_uris=self_uris)
        _alice, alice_peer = await worker.connect()
        to = "msrp://127.0.0.1:2855/sA;tcp msrp://127.0.0.1:2855/sB;tcp msrp://bob:1/b;tcp"
        await worker.loop.sock_sendall(alice_peer, send("t1", to=to))
        ok, report = await read_frames(alice_peer, 2)
        assert (ok.tid, ok.code) == (b"t1", 200)
        assert report.method == b"REPORT" and report.header("Message-ID") == b"m-t1"
        assert report.to_path == ["msrp://alice:9/a;tcp"]
        assert report.from_path == ["msrp://127.0.0.1:2855/sA;tcp"]
        alice_peer.close()

    run(main())


def test_a_path_that_loops_through_us_is_refused_before_the_route_runs() -> None:
    async def main() -> None:
        routed: list[bytes] = []

        def script(msrp: Msrp) -> None:
            routed.append(msrp.frame.tid)
            msrp.reply(200, "OK")

        self_uris = SelfUris.build([parse_listen("tcp:127.0.0.1:2855")])
        worker = Worker(script, self_uris=self_uris)
        _alice, alice_peer = await worker.connect()
        us = "msrp://127.0.0.1:2855/s{};tcp"
        loop_path = " ".join(us.format(i) for i in range(3)) + " msrp://bob:1/b;tcp"
        await worker.loop.sock_sendall(alice_peer, send("t1", to=loop_path) + send("t2"))
        refused, ok = await read_frames(alice_peer, 2)
        assert (refused.tid, refused.code) == (b"t1", 403)
        assert (ok.tid, ok.code) == (b"t2", 200) and routed == [b"t2"]
        assert worker.ctx.counters.values[Counter.loops_refused] == 1
        alice_peer.close()

    run(main())
