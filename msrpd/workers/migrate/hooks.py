"""MoveHooks: what a connection does for migration, mixed into workers/conn.MsrpConnection.

Rules (handover.py tells the whole handover): a connection moves to another worker only when
it is settled, between frames (bytes_to_carry). One just moved here reads nothing until
MOVING (hold_reading .. start_reading): the bytes its old worker's reader held are read
first, and an EOF waits behind them. Its outbox writes only what the old worker forwarded
until RELEASE (hold.py; release: then what was held back, in order).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..hold import Hold
from .state import Arrival

if TYPE_CHECKING:
    from ...protocol import FrameReader
    from ..intake import Intake
    from ..outbox import Outbox
    from ..ports import Sink
    from ..transports.base import Wire

__all__ = ["MoveHooks"]


class MoveHooks:
    # What the hooks use of the connection they are part of (conn.py).
    arrival: Arrival | None
    """Just moved here: what it holds back until its handover is done."""
    closed: bool
    stream_sink: Sink | None
    reader: FrameReader
    intake: Intake
    out: Outbox
    wire: Wire

    if TYPE_CHECKING:

        @property
        def may_read(self) -> bool: ...

        def data_received(self, data: bytes) -> None: ...

        def eof_received(self) -> bool | None: ...

    def bytes_to_carry(self) -> bytes | None:
        """What its reader holds, for a new owner to read first, when it can move to another
        worker now (colocate.py): open, between frames, nothing waiting to be written to it
        or held back, no streamed frame going in or out, not paused; else None."""
        if (
            self.closed
            or self.stream_sink is not None
            or self.intake.blockers
            or self.arrival is not None
            or not self.out.settled
        ):
            return None
        return self.reader.detach()

    def rate_levels(self) -> tuple[float | None, ...]:
        """Its [limits] rate buckets' tokens now, () without any: they move with it (a move
        must not refill them: limits.py)."""
        rate = self.intake.rate
        return () if rate is None else rate.levels(time.monotonic())

    def carry_size(self) -> int:
        """The bytes bytes_to_carry would hold as far as the frames read go; -1 in the middle
        of a streamed frame (read, or relayed from here) or while reading is paused by a
        congested destination (conn.unblock asks again). Nothing copied: asked after every
        read while a move waits for a frame's end (colocate.py)."""
        if self.closed or self.stream_sink is not None or self.intake.blockers:
            return -1
        return self.reader.carry_size

    def arrive(self, carried: bytes, on_taken_over: Callable[[Any], None]) -> None:
        """Moved here, with `carried`, the bytes the old worker's reader held: its writes are
        held until RELEASE, and `on_taken_over(conn)` runs once it is registered here."""
        self.arrival = Arrival(carried, on_taken_over)
        self.out.hold = Hold()

    def release_on(self, link: object) -> None:
        """RELEASE will come on handoff `link`: flow control never pauses it for what the
        connection holds back (it would wait for itself)."""
        hold = self.out.hold
        if hold is not None:
            hold.release_link = link

    def hold_reading(self) -> None:
        """Moved here: process nothing it sends until start_reading()."""
        if self.arrival is not None:
            self.arrival.reading_held = True

    def start_reading(self) -> None:
        arrival = self.arrival
        if arrival is None:
            return
        arrival.reading_held = False
        if self.out.hold is None:
            self.arrival = None  # released already: nothing is held back any more
        self.intake.restart()
        if self.closed or self.wire.transport is None:
            return
        if not self.intake.blockers and self.may_read:
            self.wire.resume_reading()
        if arrival.carried:
            carried, arrival.carried = arrival.carried, b""
            self.data_received(carried)
        if arrival.eof_held:
            arrival.eof_held = False
            self.eof_received()  # the reader reports the close, and the connection closes

    def release(self) -> None:
        """The old worker has forwarded everything: write what was held back, in order."""
        arrival, out = self.arrival, self.out
        held = out.take_held()
        if arrival is not None and not arrival.reading_held:
            self.arrival = None
        for data, close_after, source, more in held:
            out.write_frame(data, close_after, source=source, more=more)
        out.flow.check(out)

    @property
    def holding(self) -> bool:
        """Just moved here: frames wait for the old worker's RELEASE."""
        return self.out.hold is not None

    @property
    def reading_held(self) -> bool:
        """Just moved here: reads nothing until MOVING."""
        return self.arrival is not None and self.arrival.reading_held
