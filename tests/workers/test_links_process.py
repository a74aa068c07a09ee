"""Handoff between two real processes: a forked worker on uvloop echoes what it is handed back
to the test process, which runs asyncio's own loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
import uvloop

from msrpd.workers.handoff import make_conid
from msrpd.workers.link import Link

from .hubs import Peer, run, until

STOP = make_conid(9, 1, 1)  # a CLOSE for this one stops the echo worker
DEAD = make_conid(9, 1, 2)  # not a live connection: answered GONE


def echo_worker(own: str, peer: str, ready: Event) -> None:
    uvloop.run(echo(Path(own), Path(peer), ready))


class Echo(Peer):
    """Hands every FRAME back to `peer`; a CLOSE for STOP ends it."""

    def __init__(self, own: Path, peer: Path) -> None:
        super().__init__(own)
        self.peer = peer
        self.stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        if conid == DEAD:
            return False
        self.hub.send(self.peer, conid, 0, [payload], flags)
        return True

    def close_conn(self, conid: int) -> None:
        if conid == STOP and not self.stop.done():
            self.stop.set_result(None)


async def echo(own: Path, peer: Path, ready: Event) -> None:
    worker = Echo(own, peer)
    await worker.hub.start()
    ready.set()
    await worker.stop
    await worker.hub.close()


@pytest.fixture
def echo_process(tmp_path: Path) -> Iterator[BaseProcess]:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(
        target=echo_worker, args=(str(tmp_path / "echo.sock"), str(tmp_path / "test.sock"), ready)
    )
    proc.start()
    try:
        assert ready.wait(10), "echo worker did not start"
        yield proc
    finally:
        if proc.is_alive():
            proc.kill()  # only the process this fixture started, by its pid
        proc.join(10)
        proc.close()


def test_frames_cross_processes_in_order(tmp_path: Path, echo_process: BaseProcess) -> None:
    """1. Send 3,000 frames of random sizes, and one to a dead connection.
    2. The echo worker hands each back: same conid, payload and flags, same order.
    3. The dead one comes back as GONE with our token.
    4. A CLOSE stops the worker, which exits 0."""
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randint(0, 9000)) for _ in range(3000)]
    echo_path = tmp_path / "echo.sock"

    async def main() -> None:
        async with Peer(tmp_path / "test.sock") as me:
            for k, data in enumerate(payloads):
                me.hub.send(echo_path, k, k, [data], k % 4)
                if k % 100 == 99:
                    await asyncio.sleep(0)
            me.hub.send(echo_path, DEAD, 4242, [b"nobody"])
            await until(lambda: len(me.frames) == len(payloads) and bool(me.gone), timeout=30)
            assert me.frames == [(k, data, k % 4) for k, data in enumerate(payloads)]
            assert me.gone == [(DEAD, 4242)]
            me.hub.send_close(echo_path, STOP)
            await until(lambda: not echo_process.is_alive(), timeout=10)

    run("asyncio", main)
    echo_process.join(10)
    assert echo_process.exitcode == 0
    assert not echo_path.exists()


def test_killed_worker_fails_every_later_frame(tmp_path: Path, echo_process: BaseProcess) -> None:
    """1. Frames reach the worker and come back.
    2. The worker is killed (SIGKILL, no cleanup: its socket file stays).
    3. Every frame sent after that is reported gone; nothing hangs."""
    echo_path = tmp_path / "echo.sock"

    async def main() -> None:
        async with Peer(tmp_path / "test.sock") as me:
            for k in range(100):
                me.hub.send(echo_path, k, k, [b"before"])
            await until(lambda: len(me.frames) == 100)
            echo_process.kill()
            await until(lambda: not echo_process.is_alive())
            await asyncio.sleep(0.05)
            for k in range(100, 150):
                me.hub.send(echo_path, k, k, [b"after"])
            await until(lambda: len(me.gone) == 50)
            assert me.gone == [(k, k) for k in range(100, 150)]
            assert echo_path.exists()

    run("uvloop", main)
