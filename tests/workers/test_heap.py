"""A worker's heap (process/heap.py, issue 16): buffers of a big message's size, allocated
and freed again and again, reuse the same memory instead of fresh pages."""

from __future__ import annotations

import subprocess
import sys

# Four 1 MiB bytes, freed, then one 4 MiB frame built from 256 KiB reads, 50 times over: what
# a worker relaying big messages does. Prints the page faults per round.
ROUNDS = """
import resource, sys
from msrpd.process.heap import keep_heap
if sys.argv[1] == "keep":
    assert keep_heap()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = faults()
for _ in range(50):
    bufs = [b"x" * (1 << 20) for _ in range(4)]
    del bufs
    buf = bytearray()
    for _ in range(16):
        buf += b"y" * (256 << 10)
    frame = bytes(buf)
    del buf, frame
print((faults() - start) / 50)
"""


def faults_per_round(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def test_big_buffers_reuse_the_heap() -> None:
    # 8 MiB allocated per round is 2,048 pages: glibc's own thresholds map most of them
    # afresh; kept, the heap serves them from pages it already has.
    assert faults_per_round("default") > 1000
    assert faults_per_round("keep") < 100
