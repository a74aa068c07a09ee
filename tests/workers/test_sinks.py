"""The sinks (sinks.py) with real ends: a LocalSink writes to a served MsrpConnection and
pauses the reader it was made for while that destination is congested (flow.py); a
HandoffSink sends over a real handoff link, one token per frame whose pieces all carry it,
and remembers the frame by that token so that a GONE can be reported (gone.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from msrpd.shm import Counter
from msrpd.workers.gone import Sent, SentMemory
from msrpd.workers.handoff import HandoffFlags
from msrpd.workers.handoffout import HandoffOut
from msrpd.workers.link import Link
from msrpd.workers.ports import WRITE_HIGH
from msrpd.workers.sinks import HandoffSink, LocalSink
from msrpd.workers.stopstate import StopState

from .hubs import Peer
from .routepath import Worker, frames, read_frames, send, until


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def ignore(msrp: object) -> None:
    pass


def test_a_local_sink_writes_to_its_connection_until_it_closes() -> None:
    async def main() -> None:
        worker = Worker(ignore)
        alice, alice_peer = await worker.connect()
        bob, bob_peer = await worker.connect()
        sink = LocalSink(bob.out, alice)
        assert sink.send(send("t1"), source=alice.conid)
        (got,) = await read_frames(bob_peer, 1)
        assert got.tid == b"t1"
        bob.close("test")
        await until(lambda: bob.closed)
        assert not sink.send(send("t2"), source=alice.conid)  # the relay reports it
        alice_peer.close()
        bob_peer.close()

    run(main())


def test_a_local_sink_pauses_its_reader_while_the_destination_is_congested() -> None:
    async def main() -> None:
        worker = Worker(ignore)
        alice, alice_peer = await worker.connect()
        bob, bob_peer = await worker.connect()
        big = send("t1", b"x" * (WRITE_HIGH + 4096))
        assert LocalSink(bob.out, alice).send(big, source=alice.conid)
        assert alice.intake.blockers == {bob.out}  # over the high-water mark: alice stops
        received = b""
        while len(received) < len(big):
            received += await worker.loop.sock_recv(bob_peer, 1 << 20)
        assert [f.tid for f in frames(received)] == [b"t1"]
        await until(lambda: not alice.intake.blockers)  # drained: alice reads again
        alice_peer.close()
        bob_peer.close()

    run(main())


class Recorder(Peer):
    """The owner worker's hub: records each FRAME with its token."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.tokens: list[int] = []

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        self.tokens.append(source[1])
        return super().deliver(link, conid, payload, flags, source)


def test_a_handoff_sink_gives_a_frame_one_token_and_remembers_it(tmp_path: Path) -> None:
    async def main() -> None:
        hub = Peer(tmp_path / "handoff-0-1.sock").hub  # this worker's hub: it only sends here
        worker = Worker(ignore, hub)
        alice, alice_peer = await worker.connect()
        out = HandoffOut(hub, tmp_path, worker.ctx.counters, SentMemory(StopState()))
        record = Sent(b"t1", alice.peer_key, alice.conid, b"MSRP t1 SEND\r\n")
        async with Recorder(out.path(1, 1)) as owner:
            streamed = HandoffSink(out, hub, out.path(1, 1), 77, record, alice)
            for piece, more in ((b"head", True), (b"body", True), (b"end", False)):
                assert streamed.send(piece, source=alice.conid, more=more)
            whole = HandoffSink(out, hub, out.path(1, 1), 77, None, alice)
            assert whole.send(b"frame", source=alice.conid, close_after=True)
            await until(lambda: len(owner.frames) == 4)
        more, close = HandoffFlags.MORE, HandoffFlags.CLOSE_AFTER
        assert owner.frames == [
            (77, b"head", more),
            (77, b"body", more),
            (77, b"end", 0),
            (77, b"frame", close),
        ]
        first, *rest = owner.tokens
        assert rest[:2] == [first, first] and rest[2] != first
        assert out.sent.take(first) == record and out.sent.take(rest[2]) is None
        assert worker.ctx.counters.values[Counter.handoffs_out] == 4
        await hub.close()
        alice_peer.close()

    run(main())


def test_a_handoff_sink_pauses_its_reader_while_the_owner_asks(tmp_path: Path) -> None:
    """PAUSE(conid) from the owner: a reader that relays into it stops reading until RESUME
    (remoteflow.py)."""

    async def main() -> None:
        hub = Peer(tmp_path / "handoff-0-1.sock").hub  # this worker's hub: it only sends here
        worker = Worker(ignore, hub)
        alice, alice_peer = await worker.connect()
        out = HandoffOut(hub, tmp_path, worker.ctx.counters, SentMemory(StopState()))
        async with Peer(out.path(1, 1)):
            out.flow.on_flow(True, 77, 0, 1)  # the owner of 77 asked for a pause
            sink = HandoffSink(out, hub, out.path(1, 1), 77, None, alice)
            assert sink.send(b"frame", source=alice.conid)
            assert alice.intake.blockers == {("handoff", 77)}
            out.flow.on_flow(False, 77, 0, 1)  # RESUME
            assert alice.intake.blockers == set()
        await hub.close()
        alice_peer.close()

    run(main())
