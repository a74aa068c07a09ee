"""Connection ids that are never reused for the life of the shared memory (issue 12).

Why: a connection id (handoff.make_conid) names its owner by (slot, generation), and a worker
that dies is replaced by one with the same (slot, generation), so that routing to the slot
keeps working. If the successor counted its serials from 1 again, a cmap entry or a handoff
in flight for one of the dead worker's connections would reach a stranger's connection.

How: the worker reserves serials in blocks ahead of use and publishes the end of its
reservation (the mark) in its heartbeat record before it hands out any serial of the block;
after reaping, the supervisor starts the successor at the dead worker's mark. The mark is
one aligned 8-byte store into shared memory, which a SIGKILL cannot tear or undo, so every
serial the dead worker may have used lies below it. A block costs one store per BLOCK
connections instead of one per connection; a crash wastes at most BLOCK - 1 serials of the
2**40 a (slot, generation) has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .handoff import SERIAL_BITS

__all__ = ["BLOCK", "FIRST_SERIAL", "SerialBlocks"]

FIRST_SERIAL: Final = 1
"""Where the first worker of a (slot, generation) starts."""
BLOCK: Final = 1024
_LIMIT: Final = 1 << SERIAL_BITS


class SerialBlocks:
    """The serials of one worker process, from `first` up, reserved BLOCK at a time.

    Args:
        first: the first serial this process may use (the supervisor's start value).
        publish: publish(mark) stores "serials below mark may be in use" where the supervisor
            reads it (Heartbeats.reserve_serials); called before a serial of the block is used.
        block: serials per reservation.
    """

    __slots__ = ("_block", "_mark", "_next", "_publish")

    def __init__(self, first: int, publish: Callable[[int], None], block: int = BLOCK) -> None:
        if not 0 <= first < _LIMIT or block < 1:
            raise ValueError(f"bad serial range: {first=} {block=}")
        self._next = first
        self._mark = first  # nothing reserved yet
        self._publish = publish
        self._block = block

    def take(self) -> int:
        """The next serial, never one handed out before by this (slot, generation).

        Raises:
            OverflowError: the 40 serial bits are used up.
        """
        serial = self._next
        if serial >= self._mark:
            if serial >= _LIMIT:
                raise OverflowError("connection id serials exhausted for this worker slot")
            self._mark = min(serial + self._block, _LIMIT)
            self._publish(self._mark)
        self._next = serial + 1
        return serial

    @property
    def mark(self) -> int:
        """The end of the reservation (published)."""
        return self._mark
