"""Outbox (msrpd/workers/outbox.py) with its FlowControl (flow.py) over a real TcpWire on
127.0.0.1: batching, frames kept whole behind a streamed one, close after flush, the sent log
a stop reports from, and sources paused while the peer does not read."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field

import pytest

from msrpd.protocol.splice import Spliced
from msrpd.shm import Counter, StatsCounters
from msrpd.workers.batch import WriteBatch
from msrpd.workers.connstats import ConnStats
from msrpd.workers.flow import FlowControl
from msrpd.workers.hold import Hold
from msrpd.workers.outbox import Outbox
from msrpd.workers.ports import WRITE_HIGH, Blockable
from msrpd.workers.sinks import LocalSink, send_spliced
from msrpd.workers.transports.tcp import TcpWire

from .hubs import LOOPS, run, until


class Source:
    """A connection that relays into the outbox's (ports.Blockable)."""

    def __init__(self) -> None:
        self.blocked: list[Hashable] = []

    def block(self, dest: Hashable) -> None:
        self.blocked.append(dest)

    def unblock(self, dest: Hashable) -> None:
        self.blocked.remove(dest)


class Owner(Source):
    """The connection the outbox writes for: never paused for its own writes."""


class Side(asyncio.Protocol):
    """The server side's asyncio protocol: pause/resume_writing go to the outbox, as in
    conn.py."""

    def __init__(self, box: Box) -> None:
        self.box = box

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.box.wire.attach(transport, lambda data: None, WRITE_HIGH, lambda tid, n: None)

    def pause_writing(self) -> None:
        self.box.out.pause_writing()

    def resume_writing(self) -> None:
        self.box.out.resume_writing()


@dataclass
class Box:
    wire: TcpWire = field(default_factory=TcpWire)
    owner: Owner = field(default_factory=Owner)
    stats: ConnStats = field(default_factory=ConnStats)
    counters: StatsCounters = field(default_factory=StatsCounters)
    batch: WriteBatch = field(init=False)
    out: Outbox = field(init=False)
    reader: asyncio.StreamReader = field(init=False)

    def __post_init__(self) -> None:
        flow = FlowControl()
        # Inside a read's work for good: what queue() is given waits in `dirty`, and the test
        # flushes it itself.
        self.batch = WriteBatch(asyncio.get_running_loop(), None)
        self.batch.begin()
        self.out = Outbox(self.owner, self.wire, self.stats, flow, self.batch, self.counters.tally)

    def write(
        self,
        data: bytes,
        source: Hashable = None,
        more: bool = False,
        close: bool = False,
        reader: Blockable | None = None,
    ) -> None:
        """Write, and let flow control look at the connection the frame was read from
        (`reader`)."""
        assert self.out.write_frame(data, close, source=source, more=more, reader=reader)

    async def received(self, size: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(size), 10)


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[Box]:
    box = Box()
    server = await asyncio.get_running_loop().create_server(lambda: Side(box), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    box.reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await until(lambda: box.wire.transport is not None)
    try:
        yield box
    finally:
        box.wire.abort()
        writer.close()
        server.close()


def streamed_head(tid: str) -> bytes:
    return f"MSRP {tid} SEND\r\nTo-Path: msrp://b\r\nFrom-Path: msrp://a\r\n\r\n".encode()


def whole(tid: str) -> bytes:
    return f"MSRP {tid} 200 OK\r\nTo-Path: msrp://a\r\n-------{tid}$\r\n".encode()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_one_write_per_batch_and_the_counts(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            box.write(whole("a1"))
            box.write(whole("a2"), source=7)
            assert box.batch.dirty == [box.out]  # queued once for the batch
            assert box.out.pending_bytes == 2 * len(whole("a1"))
            box.out.flush()
            assert await box.received(2 * len(whole("a1"))) == whole("a1") + whole("a2")
            size = 2 * len(whole("a1"))
            assert (box.stats.frames_out, box.stats.bytes_out) == (2, size)
            assert box.counters.fold()[Counter.bytes_out] == size
            box.write(whole("a3"))
            assert box.batch.dirty == [box.out, box.out]  # the next batch is queued again

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_frame_waits_behind_a_streamed_frame(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            head, piece, end = streamed_head("s1"), b"body", b"\r\n-------s1$\r\n"
            box.write(head, source="alice", more=True)
            box.write(whole("b1"), source="bob")  # RFC 4975 §7.1: not inside alice's frame
            assert box.out.streaming and box.out.gate.held_bytes == len(whole("b1"))
            box.write(piece, source="alice", more=True)
            box.write(end, source="alice")
            assert not box.out.streaming
            box.out.flush()
            expected = head + piece + end + whole("b1")
            assert await box.received(len(expected)) == expected
            assert box.stats.frames_out == 2  # one streamed frame, one whole frame

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_big_pieces_leave_in_order_without_a_join(loop_kind: str) -> None:
    """Pieces of 2 KiB and more on average go to the transport's writelines as they are
    (issue 16); smaller ones are joined. Either way the peer gets the bytes in order."""

    async def main() -> None:
        async with connected() as box:
            sent: list[list[bytes | memoryview]] = []
            send_all = box.wire.send_all
            box.wire.send_all = lambda pieces: (sent.append(list(pieces)), send_all(pieces))[1]
            big = [bytes([65 + n]) * 9000 for n in range(3)]
            box.write(big[0], source=1)
            box.write(whole("r1"))
            box.write(big[1], source=1)
            box.write(big[2], source=2)
            box.out.flush()
            expected = big[0] + whole("r1") + big[1] + big[2]
            assert await box.received(len(expected)) == expected
            assert len(sent) == 1 and sent[0][0] is big[0]  # the frame itself, not a copy
            box.write(whole("s1"))
            box.write(whole("s2"))
            box.out.flush()  # small frames: one joined write
            assert await box.received(2 * len(whole("s1"))) == whole("s1") + whole("s2")
            assert len(sent) == 1
            assert box.stats.frames_out == 6

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_spliced_frame_goes_whole_and_after_what_it_waits_behind(loop_kind: str) -> None:
    """A big frame relayed as its new head and the rest (splice.Spliced) is one frame: it
    waits whole behind another source's streamed frame, nothing comes between its pieces,
    it counts once, and the sent log keeps its head for a stop's report."""

    async def main() -> None:
        async with connected() as box:
            body = bytes(range(256)) * 300
            frame = b"\r\n" + body + b"\r\n-------b1$\r\n"
            spliced = Spliced(streamed_head("b1")[:-2], memoryview(frame))
            head, end = streamed_head("s1"), b"\r\n-------s1$\r\n"
            box.write(head, source="alice", more=True)
            sink = LocalSink(box.out, None)
            assert send_spliced(sink, spliced, "bob", close_after=False)
            assert box.out.gate.held_bytes == len(spliced)  # behind alice's frame, whole
            box.write(b"more", source="alice", more=True)
            box.write(end, source="alice")
            box.write(whole("w1"), source="carol")
            assert box.out.sent_log.records[-2][1:] == ("bob", spliced.head)
            box.out.flush()
            expected = head + b"more" + end + spliced.joined() + whole("w1")
            assert await box.received(len(expected)) == expected
            assert box.stats.frames_out == 3

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_an_abandoned_stream_is_ended_with_the_hash_flag(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            link = (7, 1)  # a handoff link's stream whose worker died
            box.write(streamed_head("t1") + b"half", source=link, more=True)
            box.write(whole("w1"))
            box.out.abandon(("other", 2))  # not in a frame here: nothing happens
            assert box.out.streaming
            box.out.abandon(link)
            box.out.flush()
            expected = streamed_head("t1") + b"half\r\n-------t1#\r\n" + whole("w1")
            assert await box.received(len(expected)) == expected

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_close_after_closes_once_what_was_written_is_out(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            box.write(whole("c1"), close=True)
            box.out.flush()
            assert await box.received(len(whole("c1"))) == whole("c1")
            assert await asyncio.wait_for(box.reader.read(), 10) == b""  # then the FIN
            assert box.stats.close_reason == "closed after relay (flag 2)"

    run(loop_kind, main)


def test_a_chunk_that_never_ended_is_not_answered() -> None:
    async def main() -> None:  # a loop for the box's write batch
        box = Box()
        box.out.shut()  # connection_lost while the chunk's 200 waited for its end-line
        assert box.out.write_frame(b"MSRP s1 200 OK\r\n-------s1$\r\n") is False
        assert box.out.closed and box.out.pending == [] and box.out.pending_bytes == 0

    asyncio.run(main())


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_source_pauses_until_the_peer_reads(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            alice, chunks = Source(), 64
            chunk = b"x" * (256 * 1024)  # 16 MiB in all: more than the kernels take
            for _ in range(chunks - 1):
                # Answers to its own frames never pause a connection.
                box.write(chunk, reader=box.owner)
            assert box.out.congested and box.owner.blocked == []
            box.write(chunk, source=9, reader=alice)
            assert alice.blocked == [box.out]  # more than WRITE_HIGH waits: alice stops
            box.out.flush()  # the peer reads nothing yet: the transport holds it
            await asyncio.sleep(0.05)
            assert box.out.write_paused and alice.blocked == [box.out]
            got = 0
            while got < chunks * len(chunk):
                got += len(await asyncio.wait_for(box.reader.read(1 << 20), 10))
            await until(lambda: not box.out.write_paused)
            assert alice.blocked == [] and not box.out.flow.active

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_the_sent_log_holds_what_the_kernel_has_not_taken(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            box.write(whole("r1"), source=5)
            box.write(whole("own"))  # the relay's own answer: never reported
            box.out.flush()
            await box.received(len(whole("r1") + whole("own")))
            box.out.trim_sent()
            assert not box.out.sent_log.records and not box.out.unsent_relayed
            head = streamed_head("r2")
            box.write(whole("r3"), source=6)
            box.write(head, source=(3, 4), more=True)
            box.write(whole("r4"), source=8)  # waits behind r2
            box.write(b"\r\n-------x$\r\n", source=9)  # so does another source's
            assert box.out.unsent and box.out.unsent_relayed
            box.out.hold = Hold()  # as if just moved here: held until RELEASE
            box.write(whole("held"), source=11)
            # Forwarded by the old worker: not held (it waits behind r2 in the gate).
            assert box.out.write_frame(whole("forwarded"), source=12, forwarded=True)
            assert box.out.hold.writes == [(whole("held"), False, 11, False)]
            unsent = box.out.give_up()
            assert unsent == [
                (6, whole("r3")),
                ((3, 4), head),  # the streamed frame being written
                (8, whole("r4")),
                (9, b"\r\n-------x$\r\n"),
                (12, whole("forwarded")),
                (11, whole("held")),
            ]
            assert box.out.pending_bytes == 0 and not box.out.streaming
            box.out.flush()  # given up: nothing more reaches the wire
            assert not box.out.unsent

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_shut_lets_the_paused_sources_go_on(loop_kind: str) -> None:
    async def main() -> None:
        async with connected() as box:
            alice = Source()
            box.write(b"y" * (WRITE_HIGH + 1), source=1, reader=alice)
            assert alice.blocked == [box.out]
            box.out.shut(drop=True)
            assert alice.blocked == [] and box.out.pending_bytes == 0
            assert not box.out.write_frame(whole("late"))  # refused: the connection is closed
            box.out.flush()
            box.wire.close()
            assert await asyncio.wait_for(box.reader.read(), 10) == b""  # nothing was sent

    run(loop_kind, main)


def numbered(n: int) -> bytes:
    """A relayed SEND of about 1 KiB whose end-line names it."""
    return (
        f"MSRP g{n} SEND\r\nTo-Path: msrp://b\r\nFrom-Path: msrp://a\r\n\r\n".encode()
        + b"." * 1000
        + f"\r\n-------g{n}$\r\n".encode()
    )


def drain(sock: socket.socket, seconds: float) -> bytes:
    """What the peer's kernel holds and gets within `seconds`, read without running the loop."""
    got = bytearray()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            got += sock.recv(1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
    return bytes(got)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_give_up_reports_exactly_the_frames_the_peer_never_gets(loop_kind: str) -> None:
    """A stop giving up on a receiver who reads again (conn.give_up: Outbox.give_up, then the
    wire's abort): every relayed frame reaches him whole or is returned to be reported, never
    both (RFC 4975 §7.1.2). The peer reads what his kernel holds just before the give-up, so our
    socket can take more when the loop next polls: uvloop's abort closes the socket only in a
    later callback, and libuv wrote its queue there first, frames the give-up had returned."""

    async def main() -> None:
        box = Box()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Side(box), "127.0.0.1", 0)
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)  # a phone's buffer
        peer.connect(server.sockets[0].getsockname())
        peer.setblocking(False)
        try:
            await until(lambda: box.wire.transport is not None)
            count = 8192  # 8 MiB: more than the kernels take
            for n in range(count):
                box.write(numbered(n), source=n)
            box.out.flush()
            await asyncio.sleep(0.05)
            assert box.wire.buffered() > 1 << 20  # the transport holds the rest
            got = drain(peer, 0.1)  # he reads: our socket is writable again
            unsent = box.out.give_up()
            box.wire.abort()
            await asyncio.sleep(0.2)  # the loop polls, and closes the socket
            got += await loop.run_in_executor(None, drain, peer, 0.5)
            reported = [source for source, _ in unsent]
            kept = count - len(reported)
            assert 0 < kept < count and reported == list(range(kept, count))
            delivered = [int(n) for n in re.findall(rb"-------g(\d+)\$", got)]
            assert delivered == list(range(kept))  # whole, in order, none of those reported
            assert peer.recv(1) == b""  # then the FIN
        finally:
            peer.close()
            server.close()

    run(loop_kind, main)
