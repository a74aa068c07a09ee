"""Delivery (delivery.py) with real connections: a destination is resolved to a sink for the
frame being routed, which is passed in with the connection it came on: a connection of ours
(LocalSink, pausing that connection when congested), another worker's (HandoffSink, whose
token remembers the frame), or a next hop dialled here, where frames wait until it is up and
are reported to their senders when it never comes (rfc-checklist §4.5)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from msrpd.protocol import parse_uri
from msrpd.routing import Destination, SendFlags
from msrpd.shm import Counter
from msrpd.workers.dialing import FailedSink
from msrpd.workers.handoff import make_conid
from msrpd.workers.sinks import HandoffSink, LocalSink

from .hubs import Peer
from .routepath import Worker, frames, read_frames, send, until


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def ignore(msrp: object) -> None:
    pass


def to(conid: int) -> Destination:
    return Destination(None, conid)


def test_a_connection_id_resolves_here_or_to_its_owner(tmp_path: Path) -> None:
    async def main() -> None:
        hub = Peer(tmp_path / "own.sock").hub  # this worker's hub: it only sends here
        worker = Worker(ignore, hub)
        alice, alice_peer = await worker.connect()
        bob, bob_peer = await worker.connect()
        (frame,) = frames(send("t1"))
        local = worker.delivery.resolve(to(bob.conid), 0, frame, alice)
        assert isinstance(local, LocalSink) and local.out is bob.out and local.reader is alice
        remote = worker.delivery.resolve(to(make_conid(1, 1, 5)), 0, frame, alice)
        assert isinstance(remote, HandoffSink) and remote.reader is alice
        assert (remote.conid, remote.path) == (make_conid(1, 1, 5), worker.ctx.handoffs.path(1, 1))
        assert remote.record is not None
        assert (remote.record.tid, remote.record.origin) == (b"t1", alice.conid)
        assert remote.record.peer == alice.peer_key and remote.record.head is not None
        # Ours but not open (and not moving): nowhere.
        assert worker.delivery.resolve(to(make_conid(0, 1, 999)), 0, frame, alice) is None
        await hub.close()
        alice_peer.close()
        bob_peer.close()

    run(main())


def test_another_workers_connection_without_a_hub_is_nowhere() -> None:
    async def main() -> None:
        worker = Worker(ignore)
        alice, alice_peer = await worker.connect()
        (frame,) = frames(send("t1"))
        assert worker.delivery.resolve(to(make_conid(1, 1, 5)), 0, frame, alice) is None
        alice_peer.close()

    run(main())


def test_a_next_hop_is_dialled_and_frames_wait_for_it() -> None:
    async def main() -> None:
        worker = Worker(ignore)
        alice, alice_peer = await worker.connect()
        server = socket.create_server(("127.0.0.1", 0))
        server.setblocking(False)
        port = server.getsockname()[1]
        dest = Destination(parse_uri(f"msrp://127.0.0.1:{port}/next;tcp"))
        (first, second) = frames(send("t1") + send("t2"))
        reuse_only = worker.delivery.resolve(dest, SendFlags.REUSE_ONLY, first, alice)
        assert reuse_only is None  # flag 1: no connection is opened
        sink = worker.delivery.resolve(dest, 0, first, alice)
        assert isinstance(sink, LocalSink) and sink.out.owner.outbound and sink.reader is alice
        again = worker.delivery.resolve(dest, 0, second, alice)
        assert isinstance(again, LocalSink) and again.out is sink.out  # one connect
        assert sink.send(send("t1"), source=alice.conid)
        assert again.send(send("t2"), source=alice.conid)
        hop, _ = await worker.loop.sock_accept(server)
        got = await read_frames(hop, 2)
        assert [f.tid for f in got] == [b"t1", b"t2"]
        assert worker.ctx.counters.values[Counter.connects_out] == 1
        hop.close()
        server.close()
        alice_peer.close()

    run(main())


def test_frames_for_a_next_hop_that_cannot_be_reached_are_reported() -> None:
    async def main() -> None:
        worker = Worker(ignore)
        alice, alice_peer = await worker.connect()
        with socket.create_server(("127.0.0.1", 0)) as closed:
            port = closed.getsockname()[1]  # nothing listens there once closed
        dest = Destination(parse_uri(f"msrp://127.0.0.1:{port}/next;tcp"))
        (first, second) = frames(send("t1") + send("t2"))
        sink = worker.delivery.resolve(dest, 0, first, alice)
        assert isinstance(sink, LocalSink) and sink.send(send("t1"), source=alice.conid)
        (report,) = await read_frames(alice_peer, 1)
        assert report.method == b"REPORT" and report.header("Message-ID") == b"m-t1"
        assert report.header("Status") == b"000 408 Request Timeout"
        await until(lambda: worker.ctx.counters.values[Counter.connects_failed] == 1)
        # Remembered: the next frame for it fails at once, and is reported too.
        failed = worker.delivery.resolve(dest, 0, second, alice)
        assert isinstance(failed, FailedSink)
        (report,) = await read_frames(alice_peer, 1)
        assert report.header("Message-ID") == b"m-t2"
        assert worker.ctx.counters.values[Counter.connects_out] == 1
        alice_peer.close()

    run(main())
