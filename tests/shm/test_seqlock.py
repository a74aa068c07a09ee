"""The seqlock's sequence number (msrpd/shm/seqlock.py) as another process sees it while a
writer works: it only ever goes up (one store each; struct's pack_into zeroed the word first,
and a reader could take that 0 for an even sequence number)."""

from __future__ import annotations

import mmap
import os
import time

from msrpd.shm.seqlock import write_begin, write_end

from ..forking import Children


def test_a_sequence_number_never_reads_as_one_seen_before(children: Children) -> None:
    area = mmap.mmap(-1, mmap.PAGESIZE)  # shared with the forked writer
    buf = memoryview(area)

    def writer() -> None:
        stop_at = time.monotonic() + 1.0
        while time.monotonic() < stop_at:
            write_end(buf, 8, write_begin(buf, 8))

    seqs = buf.cast("Q")
    last, reads = 0, 0
    child = children.fork(writer)
    while (done := os.waitpid(child, os.WNOHANG)) == (0, 0):
        for _ in range(10_000):
            seq = seqs[1]
            assert seq >= last, (seq, last)
            last = seq
        reads += 10_000
    children.live.discard(child)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert last > 1000 and reads > 10_000, (last, reads)  # the child wrote, this one read
    seqs.release()
    buf.release()
    area.close()
