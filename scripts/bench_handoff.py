"""Handoff benchmark: frames/s and MB/s from one worker process to another over a HandoffHub.

Usage: .venv/bin/python scripts/bench_handoff.py [--seconds S] [--loop uvloop|asyncio]

For 100 B and 4 KiB payloads: fork a receiver process with its own hub, then send it FRAMEs for
S seconds in bursts of 256 per loop iteration (as a busy worker relaying many frames would),
holding back while more than 1 MiB waits to be written. The receiver's deliver() only counts;
a CLOSE ends the run and the receiver reports frames, payload bytes and the time from its first
frame to the CLOSE. Both processes run the chosen loop.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import uvloop

from msrpd.workers.handoff import Handoff, make_conid
from msrpd.workers.link import Link
from msrpd.workers.links import HandoffHub

CONID = make_conid(1, 1, 1)
STOP = make_conid(1, 1, 2)
BURST = 256
HIGH_WATER = 1 << 20
SIZES = (100, 4096)


def run_loop(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


class Quiet:
    """A HubHandler that ignores everything: the sender's."""

    def before_read(self) -> None:
        pass

    def after_read(self) -> None:
        pass

    def deliver(
        self, link: Link, conid: int, payload: memoryview | bytes, flags: int, source: object
    ) -> bool:
        return True

    def on_gone(self, conid: int, token: int) -> None:
        print("gone", conid, token)

    def close_conn(self, conid: int) -> None:
        pass

    def on_flow(self, pause: bool, conid: int, token: int, link_id: int) -> None:
        pass

    def on_control(self, link: Link, msg: Handoff) -> None:
        pass

    def on_link_lost(self, link_id: int) -> None:
        pass


class Counter(Quiet):
    """The receiver's HubHandler: counts FRAMEs; a CLOSE for STOP reports and ends the run."""

    def __init__(self, report: Connection) -> None:
        self.report = report
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.frames, self.bytes, self.first = 0, 0, 0.0

    def deliver(
        self, link: Link, conid: int, payload: memoryview | bytes, flags: int, source: object
    ) -> bool:
        if not self.frames:
            self.first = time.perf_counter()
        self.frames += 1
        self.bytes += len(payload)
        return True

    def close_conn(self, conid: int) -> None:
        if conid == STOP and not self.done.done():
            self.report.send((self.frames, self.bytes, time.perf_counter() - self.first))
            self.done.set_result(None)


def receiver(path: str, kind: str, ready: Event, report: Connection) -> None:
    async def main() -> None:
        counter = Counter(report)
        hub = HandoffHub(Path(path), asyncio.get_running_loop(), counter)
        await hub.start()
        ready.set()
        await counter.done
        await hub.close()

    run_loop(kind, main)


async def send_for(hub: HandoffHub, dest: Path, size: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    parts = [b"x" * size]
    deadline = loop.time() + seconds
    sent = 0
    while loop.time() < deadline:
        for _ in range(BURST):
            hub.send(dest, CONID, sent & 0xFFFFFFFF, parts)
            sent += 1
        await asyncio.sleep(0)
        while hub.pending_bytes(dest) > HIGH_WATER:
            await asyncio.sleep(0)
    hub.send_close(dest, STOP)
    return sent


def bench(size: int, seconds: float, kind: str, tmp: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    theirs, ours = ctx.Pipe(duplex=False)
    dest = tmp / f"recv-{size}.sock"
    proc = ctx.Process(target=receiver, args=(str(dest), kind, ready, ours))
    proc.start()
    writes = [0, 0]
    try:
        if not ready.wait(10):
            raise SystemExit("receiver did not start")

        async def main() -> None:
            hub = HandoffHub(tmp / f"send-{size}.sock", asyncio.get_running_loop(), Quiet())
            await hub.start()
            writes[0] = await send_for(hub, dest, size, seconds)
            writes[1] = hub.stats.writes
            await hub.close()

        run_loop(kind, main)
        if not theirs.poll(30):
            raise SystemExit("receiver did not report")
        frames, nbytes, elapsed = theirs.recv()
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert frames == writes[0], (frames, writes[0])
    print(
        f"{size:>5} B payloads: {frames / elapsed:>10,.0f} frames/s  "
        f"{nbytes / elapsed / 1e6:>8.1f} MB/s  "
        f"({frames:,} frames in {elapsed:.2f} s, {frames / writes[1]:.0f} frames per write)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    print(f"handoff between two processes, {args.loop} loop")
    with tempfile.TemporaryDirectory(prefix="msrpd-bench-") as tmp:
        for size in SIZES:
            bench(size, args.seconds, args.loop, Path(tmp))


if __name__ == "__main__":
    main()
