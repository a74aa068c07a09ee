"""Held: which frames that came over one handoff link this worker has not passed to a kernel
yet (the answer to HELD, handoff.py).

Rules (gone.py): the worker that handed us a frame remembers it until we say we no longer
hold it, so that a GONE we send later (its connection closed, or a stop gave up on it) can
still be reported to its sender (RFC 4975 §7.1.2). Held, for sources (link id, token): in a
connection's outbox (sent log, a stream not ended, the gate, the hold until RELEASE), in a
moving connection's queue, or forwarded on to its new worker, which may still refuse it
(SentMemory.forwarded). Built once per question (one per handoff_memory bytes of records,
about 350 bytes a frame), never on the per-frame path.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Iterable

__all__ = ["held_tokens"]


def held_tokens(link_id: int, sources: Iterable[Hashable]) -> bytes:
    """The HOLDING payload: each token of link `link_id` among `sources`, once (u32 each,
    network order)."""
    tokens = {
        source[1]
        for source in sources
        if isinstance(source, tuple) and len(source) == 2 and source[0] == link_id
    }
    return struct.pack(f"!{len(tokens)}I", *tokens)
