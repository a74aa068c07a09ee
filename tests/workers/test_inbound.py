"""Inbound (inbound.py), the worker's HubHandler, behind a real hub built by the worker's
context as worker.py builds it: what another worker's hub hands over goes straight to our
connections, over real Unix and TCP sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from msrpd.shm import Counter
from msrpd.workers.context import WorkerContext
from msrpd.workers.gone import GoneReports, SentMemory
from msrpd.workers.handoff import HandoffFlags, make_conid
from msrpd.workers.inbound import Inbound
from msrpd.workers.links import HandoffHub

from .hubs import Peer
from .routepath import Worker, read_frames, send, until


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def ignore(msrp: object) -> None:
    pass


def inbound_worker(own: Path) -> Worker:
    """A worker whose hub, listening on `own`, hands what comes to Inbound."""

    def hub(ctx: WorkerContext) -> HandoffHub:
        reports = GoneReports(SentMemory(ctx.stop), ctx)
        return HandoffHub(own, asyncio.get_running_loop(), Inbound(ctx, reports), stop=ctx.stop)

    return Worker(ignore, hub)


def test_a_frame_for_a_connection_here_is_written_to_it_and_one_for_none_is_gone(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        own = tmp_path / "handoff-0-1.sock"
        worker = inbound_worker(own)
        hub = worker.ctx.hub
        assert hub is not None
        await hub.start()
        bob, bob_peer = await worker.connect()
        async with Peer(tmp_path / "other.sock") as other:
            other.hub.send(own, bob.conid, 7, [send("t1")])
            (got,) = await read_frames(bob_peer, 1)
            assert got.tid == b"t1"
            assert worker.ctx.counters.values[Counter.handoffs_in] == 1
            assert worker.ctx.last_delivery > 0  # a retiring worker waits for quiet
            nobody = make_conid(0, 1, 999)
            other.hub.send(own, nobody, 8, [send("t2")])
            await until(lambda: other.gone == [(nobody, 8)])
            other.hub.send_close(own, bob.conid)
            await until(lambda: bob.closed)
        await hub.close()
        bob_peer.close()

    run(main())


def test_a_gone_for_a_frame_we_handed_over_counts_it_lost(tmp_path: Path) -> None:
    async def main() -> None:
        own = tmp_path / "handoff-0-1.sock"
        worker = inbound_worker(own)
        hub = worker.ctx.hub
        assert hub is not None
        await hub.start()
        async with Peer(tmp_path / "other.sock", live=lambda conid: False) as other:
            hub.send(other.path, make_conid(1, 1, 5), 3, [send("t1")])
            counters = worker.ctx.counters.values
            await until(lambda: counters[Counter.handoff_gone] == 1)
            assert counters[Counter.relay_fail] == 1
        await hub.close()

    run(main())


def test_a_lost_link_ends_the_streamed_frame_it_was_writing(tmp_path: Path) -> None:
    """Its worker died mid-frame: the connection must not wait for the rest forever
    (issue 12); the frame is ended and the connection goes on."""

    async def main() -> None:
        own = tmp_path / "handoff-0-1.sock"
        worker = inbound_worker(own)
        hub = worker.ctx.hub
        assert hub is not None
        await hub.start()
        bob, bob_peer = await worker.connect()
        whole = send("t1", b"x" * 64)
        head = whole[: whole.index(b"\r\n\r\n") + 4 + 10]  # the head and 10 bytes of body
        other = Peer(tmp_path / "other.sock")
        await other.hub.start()
        other.hub.send(own, bob.conid, 9, [head], HandoffFlags.MORE)
        await until(lambda: bool(bob.out.gate.open))
        await other.hub.close()
        (got,) = await read_frames(bob_peer, 1)
        assert got.tid == b"t1"
        assert not bob.out.gate.open and not bob.closed
        await hub.close()
        bob_peer.close()

    run(main())
