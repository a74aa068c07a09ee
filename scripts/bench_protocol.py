"""Protocol-core benchmark: read + relay splice + reply build, one core, no sockets.

Usage: .venv/bin/python scripts/bench_protocol.py [--seconds S]

Feeds a stream of identical SEND frames through one FrameReader in 64 KiB reads (as a worker
reading a busy connection would), and for every frame builds the relayed bytes and the 200.
Prints frames/s and body MB/s for 100 B and 4 KiB bodies.
"""

from __future__ import annotations

import argparse
import time

from msrpd.protocol.events import NEED_DATA
from msrpd.protocol.frame import Frame
from msrpd.protocol.reader import FrameReader
from msrpd.protocol.splice import relay_splice
from msrpd.protocol.writer import build_reply

TARGET_100B = 300_000  # frames/s, issue 2


def frame_bytes(tid: int, size: int) -> bytes:
    t = f"{tid:08x}"
    return (
        (
            f"MSRP {t} SEND\r\n"
            "To-Path: msrp://127.0.0.1:2855/msrp-6b082c54-11d0-1;tcp msrp://127.0.0.1:44996/bob;tcp\r\n"
            "From-Path: msrp://127.0.0.1:44980/alicesess;tcp\r\n"
            f"Message-ID: m{tid}\r\nByte-Range: 1-{size}/{size}\r\nContent-Type: text/plain\r\n\r\n"
        ).encode()
        + b"x" * size
        + f"\r\n-------{t}$\r\n".encode()
    )


def run(size: int, seconds: float) -> tuple[float, float]:
    stream = b"".join(frame_bytes(i, size) for i in range(2000))
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    frames = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        reader = FrameReader()
        for chunk in chunks:
            reader.receive_data(chunk)
            next_event = reader.next_event
            while (event := next_event()) is not NEED_DATA:
                assert isinstance(event, Frame)
                relay_splice(event)
                build_reply(event, 200, "OK")
                frames += 1
    elapsed = time.perf_counter() - start
    return frames / elapsed, frames * size / elapsed / 1e6


def bare_loop(size: int, seconds: float) -> float:
    """The floor: per frame only find the end-line, split the head and join two outputs, with
    no validation; the same stream, so the ratio says what the checks and objects cost."""
    stream = b"".join(frame_bytes(i, size) for i in range(2000))
    frames = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        pos = 0
        while pos < len(stream):
            tid = stream[pos + 5 : stream.index(b" ", pos + 5)]
            end = stream.index(b"\r\n-------" + tid, pos) + len(tid) + 12
            lines = stream[pos : stream.index(b"\r\n\r\n", pos)].split(b"\r\n")
            b"\r\n".join(lines[:3])
            b"".join((lines[0], lines[2], stream[pos:end]))
            pos = end
            frames += 1
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for size in (100, 4096):
        rate, mbps = run(size, args.seconds)
        line = f"{size:>5} B body: {rate:>10,.0f} frames/s  {mbps:>8.1f} MB/s body"
        if size == 100:
            line += f"  (target {TARGET_100B:,} frames/s: {rate / TARGET_100B:.2f}x)"
        floor = bare_loop(size, args.seconds)
        line += (
            f"\n        bare find/split/join loop: {floor:>10,.0f} frames/s ({rate / floor:.2f}x)"
        )
        print(line)


if __name__ == "__main__":
    main()
