"""StopHooks: what a connection does for a graceful stop, mixed into workers/conn.MsrpConnection.

A stop reads no new frame (a streamed one being relayed is finished first, unless the stop
has given up); near its deadline what has not reached the kernel is dropped and the relayed
frames among it are reported to their senders (stopping.py, RFC 4975 §7.1.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connstats import ConnStats
    from .context import WorkerContext
    from .outbox import Outbox
    from .ports import Sink
    from .sentlog import Unsent
    from .transports.base import Wire

__all__ = ["StopHooks"]


class StopHooks:
    # What the hooks use of the connection they are part of (conn.py).
    ctx: WorkerContext
    closed: bool
    stream_sink: Sink | None
    out: Outbox
    stats: ConnStats
    wire: Wire

    @property
    def may_read(self) -> bool:
        """Not stopping, or finishing the streamed frame it was reading when the stop came."""
        stop = self.ctx.stop
        return not stop.stopping or (self.stream_sink is not None and not stop.given_up)

    def stop_reading(self) -> None:
        """Graceful stop: read no new frame (a streamed one being relayed is finished first,
        unless the stop has given up)."""
        if not self.closed and not self.may_read:
            self.wire.pause_reading()

    @property
    def unsent(self) -> bool:
        """Output not (wholly) in the kernel yet, or held back (Outbox.unsent)."""
        return self.out.unsent

    @property
    def unsent_relayed(self) -> bool:
        """A relayed frame is among what has not reached the kernel (give_up drops it)."""
        return self.out.unsent_relayed

    def give_up(self) -> list[Unsent]:
        """The stop's deadline is near: drop what has not reached the kernel, and return the
        relayed frames it held. The outbox shuts the socket for writing first, so the bytes
        the kernel has then, and a FIN, are all the peer gets: exactly the frames its senders
        are not told are lost (RFC 4975 §7.1.2)."""
        unsent = self.out.give_up()
        self.closed = True  # nothing more is written: a later frame is refused, not dropped
        self.stats.closing("relay stopping: unsent frames dropped")
        self.wire.abort()
        return unsent
