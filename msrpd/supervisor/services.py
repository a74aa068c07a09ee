"""What the supervisor serves from its select loop besides signals: the control fifo and the
metrics endpoint, each answered without blocking the loop for long (control/fifo.py,
control/metrics.py)."""

from __future__ import annotations

import contextlib
import select

from ..control.fifo import ControlServer
from ..control.metrics import MetricsServer
from .signals import SignalInbox

__all__ = ["Services"]


class Services:
    def __init__(
        self, inbox: SignalInbox, control: ControlServer, metrics: MetricsServer | None
    ) -> None:
        self.inbox = inbox
        self.control = control
        self.metrics = metrics

    def wait(self, timeout: float) -> None:
        """Serve the fifo and the endpoint until a signal comes or `timeout` passes."""
        if self.inbox.pending:
            return
        control, metrics, wake = self.control, self.metrics, self.inbox.wake_r
        readers = [wake, control.fileno()]
        if metrics is not None:
            readers.append(metrics.fileno())
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(readers, control.write_fds(), [], timeout)
            if wake in ready:
                self.inbox.drain()
            if control.fileno() in ready:
                control.on_readable()
            if metrics is not None and metrics.fileno() in ready:
                metrics.on_readable()
        if control.wants_write():
            control.on_writable()

    def close(self) -> None:
        self.control.close()
        if self.metrics is not None:
            self.metrics.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop the descriptors, leave the fifo to the supervisor."""
        self.control.close_in_child()
        if self.metrics is not None:
            self.metrics.close()
