"""An end-line searched for in a big body at memory speed (issue 16).

Why: a body's end-line can only be found by looking at every byte for CRLF "-------" tid
(RFC 4975 §7.1), and bytes.find does so at 3-5 GB/s for a marker of 13-19 bytes (CPython's
two-way search skips at most the marker's length): a fifth of a worker's CPU per MiB relayed,
more than every copy of the bytes. The C library's memmem (glibc hashes byte pairs) does the
same search at 15-18 GB/s. A foreign call costs about a microsecond, so only a search over
BIG bytes or more goes there; without memmem, bytes.find does it all.
"""

from __future__ import annotations

import ctypes
from typing import Any, Final

__all__ = ["BIG", "find"]

BIG: Final = 16 * 1024
"""Bytes searched from which memmem is worth its call. Only big bodies' searches come here:
a search that finds a small frame's end-line in a buffer of many pays the call for nothing."""


def _memmem() -> Any:
    try:
        func = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    func.restype = ctypes.c_void_p
    func.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return func


_MEMMEM: Any = _memmem()


def find(data: bytes | bytearray, needle: bytes, start: int = 0) -> int:
    """data.find(needle, start), for a start in range."""
    size = len(data) - start
    if size < BIG or start < 0 or _MEMMEM is None:  # a negative start counts from the end
        return data.find(needle, start)
    if isinstance(data, bytearray):
        # The bytearray is exported only while `at` lives: its owner may resize it after.
        at = ctypes.c_char.from_buffer(data, start)
        base = ctypes.addressof(at) - start
        found = _MEMMEM(ctypes.addressof(at), size, needle, len(needle))
        del at
    else:
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        found = _MEMMEM(base + start, size, needle, len(needle))
    return -1 if found is None else int(found) - base
