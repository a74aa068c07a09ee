"""Owners: handing what concerns a transaction to the worker that owns it (txrelay.py).

Rules: a transaction id of ours names the worker that keeps the transaction
(protocol/transact.py). What another worker learns about it (a response it read, a chunk of
it that it interrupted) goes to that worker over the handoff link, with the ids the
connection it concerns has had (the owner matches on them, transactions.py). Only to a live
worker: an id is a peer's choice, and a peer must not make us dial handoff paths of workers
that do not exist; the live set comes from the heartbeats, trusted for TTL seconds, re-read
at most every RETRY seconds on a miss.
"""

from __future__ import annotations

import math
import struct
import time
from typing import TYPE_CHECKING

from .handoff import HandoffKind

if TYPE_CHECKING:
    from .context import WorkerContext

__all__ = ["Owners"]

TTL = 1.0
RETRY = 0.1


class Owners:
    __slots__ = ("ctx", "live", "read")

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.live: frozenset[tuple[int, int]] = frozenset()
        """The live workers (slot, generation), from the heartbeats, read at `read`."""
        self.read = -math.inf

    def send(
        self, owner: tuple[int, int], kind: HandoffKind, arrival: tuple[int, ...], data: bytes
    ) -> bool:
        """Hand `data` about connection `arrival` (its current and former ids) to `owner`:
        False when that is no live worker (or there is no hub)."""
        hub = self.ctx.hub
        if hub is None or not self.alive(owner):
            return False
        ids = struct.pack(f"!{len(arrival)}Q", *arrival)
        path = self.ctx.handoffs.path(*owner)
        hub.send_control(path, kind, arrival[0], len(arrival), ids + data)
        return True

    def alive(self, owner: tuple[int, int]) -> bool:
        now = time.monotonic()
        age = now - self.read
        if age >= TTL or (owner not in self.live and age >= RETRY):
            live = self.ctx.shm.heartbeats.live()
            self.live = frozenset((r.slot, r.generation) for r in live)
            self.read = now
        return owner in self.live
