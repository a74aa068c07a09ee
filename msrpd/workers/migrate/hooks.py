"""MoveHooks: what a connection does for migration, mixed into workers/conn.MsrpConnection.

Rules (handover.py tells the whole handover): a connection moves to another worker only when
it is settled, between frames (bytes_to_carry). One just moved here reads nothing until
MOVING (hold_reading .. start_reading): the bytes its old worker's reader held are read
first, and an EOF waits behind them. It writes only what the old worker forwarded until
RELEASE (release: then what was held back, in order).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

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

        def write_frame(
            self,
            data: bytes | memoryview,
            close_after: bool = False,
            *,
            source: Hashable = None,
            more: bool = False,
        ) -> bool: ...

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

    def hold_reading(self) -> None:
        """Moved here: process nothing it sends until start_reading()."""
        if self.arrival is not None:
            self.arrival.reading_held = True

    def start_reading(self) -> None:
        arrival = self.arrival
        if arrival is None:
            return
        arrival.reading_held = False
        if arrival.held is None:
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
        arrival = self.arrival
        held = [] if arrival is None else arrival.take_held()
        if arrival is not None and not arrival.reading_held:
            self.arrival = None
        for data, close_after, source, more in held:
            self.write_frame(data, close_after, source=source, more=more)
        self.out.flow.check(self.out)

    @property
    def holding(self) -> bool:
        """Just moved here: frames wait for the old worker's RELEASE."""
        return self.arrival is not None and self.arrival.held is not None

    @property
    def holding_bytes(self) -> int:
        """What waits for RELEASE: it counts toward congestion (outbox.py)."""
        return 0 if self.arrival is None else self.arrival.held_bytes

    @property
    def reading_held(self) -> bool:
        """Just moved here: reads nothing until MOVING."""
        return self.arrival is not None and self.arrival.reading_held
