"""Bytes copied out of a reader's buffer once (issue 16): a slice of a bytearray is a copy,
and bytes() of it a second one; a view's tobytes() is the only one."""

from __future__ import annotations

__all__ = ["head_bytes"]


def head_bytes(buf: bytearray, end: int) -> bytes:
    """buf[:end] as bytes, in one copy (a slice of a bytearray would be a second one). The
    view is gone when this returns, so the caller may resize buf."""
    if end == len(buf):
        return bytes(buf)
    with memoryview(buf) as view:
        return view[:end].tobytes()
