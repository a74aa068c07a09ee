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

from msrpd.workers.handoff import make_conid
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


def receiver(path: str, kind: str, ready: Event, report: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        count = [0, 0, 0.0]  # frames, bytes, first arrival

        def deliver(conid: int, payload: memoryview | bytes, flags: int, source: object) -> bool:
            if not count[0]:
                count[2] = time.perf_counter()
            count[0] += 1
            count[1] += len(payload)
            return True

        def close_conn(conid: int) -> None:
            if conid == STOP and not done.done():
                report.send((count[0], count[1], time.perf_counter() - count[2]))
                done.set_result(None)

        hub = HandoffHub(Path(path), deliver, lambda c, t: None, loop, close_conn=close_conn)
        await hub.start()
        ready.set()
        await done
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
            loop = asyncio.get_running_loop()
            hub = HandoffHub(
                tmp / f"send-{size}.sock", lambda c, p, f: True, print, loop, close_conn=print
            )
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
