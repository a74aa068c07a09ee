"""Handoff hubs over real Unix sockets, in one event loop (uvloop and asyncio's own)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import stat
from pathlib import Path
from typing import cast

import pytest

from msrpd.workers.handoff import (
    HEADER,
    Handoff,
    HandoffDecoder,
    HandoffFlags,
    HandoffKind,
    encode_handoff,
)
from msrpd.workers.link import Link

from .hubs import LOOPS, Peer, run, until

N_FRAMES = 10_000


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class RawServer:
    """A plain Unix socket server standing in for a peer hub: it records what it reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.chunks: list[bytes] = []
        self.transports: list[asyncio.Transport] = []
        self.lost: list[asyncio.Future[None]] = []
        self.server: asyncio.AbstractServer | None = None

    def protocol(self) -> asyncio.Protocol:
        raw = self
        loop = asyncio.get_running_loop()

        class _Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                t = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
                raw.transports.append(t)
                self.done = loop.create_future()
                raw.lost.append(self.done)

            def data_received(self, data: bytes) -> None:
                raw.chunks.append(data)

            def connection_lost(self, exc: Exception | None) -> None:
                self.done.set_result(None)

        return _Proto()

    async def __aenter__(self) -> RawServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(self.protocol, path=str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self.transports:
            transport.abort()
        await asyncio.gather(*self.lost)
        await self.server.wait_closed()
        self.path.unlink(missing_ok=True)


class DeafServer:
    """A peer that accepts and never reads (uvloop ignores pause_reading() inside
    connection_made, so this one uses a plain socket)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conns: list[socket.socket] = []
        self.task: asyncio.Task[None] | None = None

    async def accept(self) -> None:
        conn, _ = await asyncio.get_running_loop().sock_accept(self.listener)
        self.conns.append(conn)

    async def __aenter__(self) -> DeafServer:
        self.listener.bind(str(self.path))
        self.listener.listen()
        self.listener.setblocking(False)
        self.task = asyncio.get_running_loop().create_task(self.accept())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        for conn in self.conns:
            conn.close()
        self.listener.close()
        self.path.unlink()


def test_ten_thousand_frames_arrive_in_order_exactly_once(tmp_path: Path, loop_kind: str) -> None:
    rng = random.Random(10_000)
    sizes = [
        rng.choice([rng.randint(0, 200), rng.randint(0, 4096), rng.randint(0, 20_000)])
        if rng.random() < 0.998
        else rng.randint(100_000, 600_000)
        for _ in range(N_FRAMES)
    ]
    payloads = [rng.randbytes(n) for n in sizes]
    expected = [(k * 7, payloads[k], k % 4) for k in range(N_FRAMES)]

    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Peer(tmp_path / "b.sock") as b:
            k = 0
            while k < N_FRAMES:
                for _ in range(rng.randint(1, 300)):
                    if k == N_FRAMES:
                        break
                    parts = [payloads[k]] if rng.random() < 0.5 else split3(payloads[k], rng)
                    a.hub.send(b.path, k * 7, k, parts, k % 4)
                    k += 1
                await asyncio.sleep(0)
                while a.hub.pending_bytes(b.path) > 1 << 20:
                    await asyncio.sleep(0.001)
            await until(lambda: len(b.frames) >= N_FRAMES, timeout=60)
            await asyncio.sleep(0.01)
            assert b.frames == expected
            assert a.gone == []
            assert a.hub.stats.sent == N_FRAMES
            assert a.hub.stats.writes < N_FRAMES // 20
            assert b.hub.stats.received == N_FRAMES

    run(loop_kind, main)


def split3(payload: bytes, rng: random.Random) -> list[bytes | memoryview]:
    a = rng.randint(0, len(payload))
    b = rng.randint(a, len(payload))
    return [payload[:a], memoryview(payload)[a:b], memoryview(payload)[b:]]


def test_one_write_per_iteration(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Peer(tmp_path / "b.sock") as b:
            # Queued while the link connects: all of it leaves in the first write.
            for k in range(100):
                a.hub.send(b.path, 1, k, [b"x" * 64])
            await until(lambda: len(b.frames) == 100)
            assert a.hub.stats.writes == 1
            # On an open link: one write per loop iteration, whatever the count.
            for k in range(500):
                a.hub.send(b.path, 1, k, [b"y" * 64])
            assert a.hub.pending_bytes(b.path) == 500 * (HEADER.size + 64)
            assert a.hub.stats.writes == 1
            await asyncio.sleep(0)
            assert a.hub.stats.writes == 2
            assert a.hub.pending_bytes(b.path) == 0
            await until(lambda: len(b.frames) == 600)

    run(loop_kind, main)


def test_one_iteration_arrives_in_one_read(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with RawServer(tmp_path / "raw.sock") as raw, Peer(tmp_path / "a.sock") as a:
            for burst in range(3):
                raw.chunks.clear()
                for k in range(50):
                    a.hub.send(raw.path, burst, k, [bytes([k]) * 64])
                await until(lambda: sum(map(len, raw.chunks)) == 50 * (HEADER.size + 64))
                assert len(raw.chunks) == 1
                msgs = HandoffDecoder().feed(raw.chunks[0])
                assert msgs == [
                    Handoff(HandoffKind.FRAME, burst, k, bytes([k]) * 64) for k in range(50)
                ]

    run(loop_kind, main)


def test_dead_connection_answers_gone_with_the_token(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        b_path = tmp_path / "b.sock"
        async with Peer(tmp_path / "a.sock") as a, Peer(b_path, lambda c: c % 2 == 0) as b:
            for k in range(200):
                a.hub.send(b.path, k, 1000 + k, [b"z"])
            await until(lambda: len(b.frames) + len(a.gone) == 200)
            assert a.gone == [(k, 1000 + k) for k in range(1, 200, 2)]
            assert [conid for conid, _, _ in b.frames] == list(range(0, 200, 2))
            assert b.hub.stats.gone_sent == a.hub.stats.gone_received == 100
            assert a.hub.stats.failed == 0

    run(loop_kind, main)


def test_both_directions_at_once(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        a_path, b_path = tmp_path / "a.sock", tmp_path / "b.sock"
        async with Peer(a_path, lambda c: c != 13) as a, Peer(b_path, lambda c: c != 13) as b:
            for k in range(20):
                a.hub.send(b_path, k, k, [b"to b"])
                b.hub.send(a_path, k, k + 100, [b"to a"])
            await until(lambda: len(a.frames) == 19 and len(b.frames) == 19)
            await until(lambda: a.gone == [(13, 13)] and b.gone == [(13, 113)])
            assert [c for c, _, _ in a.frames] == [c for c, _, _ in b.frames]

    run(loop_kind, main)


def test_close_and_close_after(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Peer(tmp_path / "b.sock") as b:
            a.hub.send(b.path, 5, 1, [b"last"], HandoffFlags.CLOSE_AFTER)
            a.hub.send_close(b.path, 6, 2)
            await until(lambda: b.closed == [6])
            assert b.frames == [(5, b"last", HandoffFlags.CLOSE_AFTER)]
            assert a.hub.stats.sent == 2

    run(loop_kind, main)


@pytest.mark.parametrize("what", ["missing", "stale"])
def test_unreachable_destination_reports_every_message(
    tmp_path: Path, loop_kind: str, what: str
) -> None:
    dest = tmp_path / "nobody.sock"
    if what == "stale":  # a socket file nobody listens on
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(dest))

    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a:
            for round_ in range(2):  # the failed link is not kept: the next send retries
                for k in range(5):
                    a.hub.send(dest, 10 + k, k, [b"p"])
                a.hub.send_close(dest, 99, 77)
                assert len(a.gone) == 6 * round_  # never from inside send
                assert a.hub.pending_bytes(dest) == 6 * HEADER.size + 5
                failed = 6 * (round_ + 1)
                await until(lambda: len(a.gone) == failed)  # noqa: B023
                assert a.gone[-6:] == [(10 + k, k) for k in range(5)] + [(99, 77)]
                assert a.hub.pending_bytes(dest) == 0
            assert a.hub.stats.failed == 12

    run(loop_kind, main)


def test_destination_closed_mid_stream(tmp_path: Path, loop_kind: str) -> None:
    """1. b closes its hub from inside its 1000th delivery; a keeps sending 4000 frames.
    2. Every frame is delivered or reported gone, except those that were in the kernel when b
       closed: delivered frames are a prefix, reported ones the whole suffix after it."""
    total, stop_at, size = 4000, 1000, 1000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        class Closer(Peer):
            def deliver(
                self,
                link: Link,
                conid: int,
                payload: memoryview | bytes,
                flags: int,
                source: tuple[int, int],
            ) -> bool:
                super().deliver(link, conid, payload, flags, source)
                if len(self.frames) == stop_at:
                    closing.append(loop.create_task(self.hub.close()))
                return True

        b = Closer(tmp_path / "b.sock")
        await b.hub.start()
        async with Peer(tmp_path / "a.sock") as a:
            for start in range(0, total, 50):
                for k in range(start, start + 50):
                    a.hub.send(b.path, k, k, [b"m" * size])
                await asyncio.sleep(0)
            await until(lambda: (total - 1, total - 1) in a.gone)
            await asyncio.gather(*closing)
            await asyncio.sleep(0.05)
            delivered = [conid for conid, _, _ in b.frames]
            gone = sorted(token for _, token in a.gone)
            assert delivered == list(range(len(delivered)))
            assert len(delivered) >= stop_at
            assert len(gone) == len(set(gone)) == a.hub.stats.failed
            assert gone == list(range(gone[0], total))
            assert gone[0] >= len(delivered)
            in_kernel = gone[0] - len(delivered)
            assert in_kernel * (HEADER.size + size) < 8 << 20

    run(loop_kind, main)


def test_link_broken_while_data_waits_in_the_transport(tmp_path: Path, loop_kind: str) -> None:
    """1. The peer accepts but never reads, so most of 8 MiB waits in a's transport.
    2. More frames queue behind it.
    3. The peer drops the connection: everything not in the kernel is reported gone."""

    async def main() -> None:
        async with DeafServer(tmp_path / "raw.sock") as raw, Peer(tmp_path / "a.sock") as a:
            for k in range(2000):
                a.hub.send(raw.path, 1, k, [b"q" * 4096])
            await until(lambda: bool(raw.conns) and a.hub.stats.writes == 1)
            await asyncio.sleep(0.05)
            for k in range(2000, 2100):
                a.hub.send(raw.path, 1, k, [b"r" * 10])
            await asyncio.sleep(0.01)
            assert a.hub.stats.writes == 1  # paused: the new frames wait
            assert a.hub.pending_bytes(raw.path) > 4 << 20
            assert a.gone == []
            raw.conns[0].close()
            await until(lambda: (1, 2099) in a.gone)
            gone = [token for _, token in a.gone]
            assert gone == list(range(gone[0], 2100))
            assert 0 < gone[0] * 4116 < 8 << 20
            assert a.hub.pending_bytes(raw.path) == 0

    run(loop_kind, main)


def test_close_gives_up_on_a_stuck_link(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with DeafServer(tmp_path / "raw.sock") as raw:
            a = Peer(tmp_path / "a.sock")
            await a.hub.start()
            for k in range(2000):
                a.hub.send(raw.path, 1, k, [b"s" * 4096])
            await until(lambda: a.hub.stats.writes == 1)
            await a.hub.close(timeout=0.2)
            gone = [token for _, token in a.gone]
            assert gone
            assert gone == list(range(gone[0], 2000))
            assert not a.path.exists()

    run(loop_kind, main)


def test_bad_stream_closes_the_link(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "b.sock") as b:
            reader, writer = await asyncio.open_unix_connection(str(b.path))
            good = encode_handoff(Handoff(HandoffKind.FRAME, 4, 1, b"ok"))
            writer.write(good + HEADER.pack(200, 0, 0, 4, 2, 0) + good)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: b closed the link
            assert b.frames == [(4, b"ok", 0)]
            writer.close()
            await writer.wait_closed()

    run(loop_kind, main)


def test_oversize_header_closes_the_link(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "b.sock", max_payload=1000) as b:
            reader, writer = await asyncio.open_unix_connection(str(b.path))
            writer.write(HEADER.pack(1, 0, 0, 4, 2, 1001))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await writer.wait_closed()

    run(loop_kind, main)


def test_send_refuses_bad_input(tmp_path: Path, loop_kind: str) -> None:
    async def main() -> None:
        a = Peer(tmp_path / "a.sock", max_payload=100)
        dest = tmp_path / "b.sock"
        with pytest.raises(ValueError, match="over the limit"):
            a.hub.send(dest, 1, 1, [b"x" * 60, b"y" * 41])
        with pytest.raises(ValueError, match="out of range"):
            a.hub.send(dest, 1, 2**32, [b"x"])
        with pytest.raises(ValueError, match="out of range"):
            a.hub.send_close(dest, 2**64, 0)
        await a.hub.close()
        with pytest.raises(RuntimeError, match="closed"):
            a.hub.send(dest, 1, 1, [b"x"])

    run(loop_kind, main)


def test_start_replaces_a_stale_socket_with_a_private_one(tmp_path: Path, loop_kind: str) -> None:
    path = tmp_path / "w.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # left behind by a crashed worker

    async def main() -> None:
        async with Peer(path) as w, Peer(tmp_path / "x.sock") as x:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            x.hub.send(path, 1, 1, [b"hi"])
            await until(lambda: w.frames == [(1, b"hi", 0)])
        assert not path.exists()

    run(loop_kind, main)


def test_start_leaves_a_regular_file_alone(tmp_path: Path, loop_kind: str) -> None:
    path = tmp_path / "w.sock"
    path.write_text("not a socket")

    async def main() -> None:
        w = Peer(path)
        with pytest.raises(OSError):
            await w.hub.start()
        await w.hub.close()

    run(loop_kind, main)
    assert path.read_text() == "not a socket"


def test_close_leaves_a_successors_socket(tmp_path: Path, loop_kind: str) -> None:
    path = tmp_path / "w.sock"

    async def main() -> None:
        old = Peer(path)
        await old.hub.start()
        async with Peer(path):  # a successor bound the same path
            await old.hub.close()
            assert path.exists()
        assert not path.exists()

    run(loop_kind, main)


def test_a_failing_callback_costs_only_its_message(
    tmp_path: Path, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def live(conid: int) -> bool:
        if conid == 3:
            raise RuntimeError("boom")
        return True

    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Peer(tmp_path / "b.sock", live) as b:
            for k in range(6):
                a.hub.send(b.path, k, k, [b"v"])
            await until(lambda: len(b.frames) == 5)
            a.hub.send(b.path, 6, 6, [b"w"])  # the link is still up
            await until(lambda: len(b.frames) == 6)
            assert [conid for conid, _, _ in b.frames] == [0, 1, 2, 4, 5, 6]
            assert a.gone == []

    run(loop_kind, main)
    assert "FRAME callback failed for 3" in caplog.text
