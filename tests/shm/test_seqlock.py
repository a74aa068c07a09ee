"""The seqlock's sequence number (msrpd/shm/seqlock.py) as another process sees it while a
writer works: it only ever goes up (one store each; struct's pack_into zeroed the word first,
and a reader could take that 0 for an even sequence number)."""

from __future__ import annotations

import mmap
import time

from msrpd.shm.seqlock import write_begin, write_end

from ..forking import Children, never_goes_back


def test_a_sequence_number_never_reads_as_one_seen_before(children: Children) -> None:
    area = mmap.mmap(-1, mmap.PAGESIZE)  # shared with the forked writer
    buf = memoryview(area)

    def writer() -> None:
        stop_at = time.monotonic() + 1.0
        while time.monotonic() < stop_at:
            write_end(buf, 8, write_begin(buf, 8))

    seqs = buf.cast("Q")
    assert never_goes_back(children, writer, lambda: int(seqs[1])) > 1000  # it wrote
    seqs.release()
    buf.release()
    area.close()
