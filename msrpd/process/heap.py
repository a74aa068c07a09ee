"""The C heap of a worker: big buffers reused instead of mapped afresh each time (issue 16).

Relaying a big message allocates and frees buffers of 256 KiB to a few MiB over and over
(reads, a whole frame's bytes, its relayed copy). glibc's malloc adapts its thresholds to
that: blocks over the mmap threshold are mapped and unmapped each time, and free memory over
the trim threshold at the top of the heap goes back to the kernel (brk). Either way the next
buffer lands on fresh pages, each one a page fault and a page the kernel zeroes: 200 to 400
faults per MiB relayed, more system CPU than all of the worker's own work on the bytes
(`scripts/bench big` reports the faults per MiB). Fixed thresholds keep up to TRIM bytes of
free heap for the next buffers; a buffer over MMAP, far beyond any frame the reader
delivers whole, is still mapped on its own.
"""

from __future__ import annotations

import ctypes
from typing import Final

__all__ = ["MMAP", "TRIM", "keep_heap"]

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3

MMAP: Final = 32 << 20
"""Blocks from this size on are mapped on their own: glibc's own dynamic maximum."""
TRIM: Final = 64 << 20
"""Free heap kept at the top before it goes back to the kernel: twice MMAP, as glibc sets it
when it adapts."""


def keep_heap() -> bool:
    """Fix glibc's thresholds at MMAP and TRIM in this process; False where the C library
    has no mallopt (not glibc), which leaves the library's own behaviour."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM))
