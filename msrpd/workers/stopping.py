"""GracefulStop: what a worker does between SIGTERM and its exit (issue 12 item 5).

Rules (RFC 4975 §7.1.2, rfc-checklist §2.4/§2.5/§4.5: a frame the relay answered 200 is
delivered, or its sender gets a failure REPORT when the SEND asked for one):
- At once: no connection reads a new frame; one relaying a streamed frame reads it to its end.
  Nothing read after the stop began is answered, so nothing is acknowledged that is not then
  delivered or reported. Output keeps flowing: frames queued for slow receivers, and frames
  other workers hand over.
- Early end, the usual case: once nothing of ours waits to reach the kernel (connections and
  handoff links), and at least QUIET after the stop (every worker has heard it by then), we
  half-close the links we opened. A peer closes such a link once it has written or refused
  everything that came on it. With every link gone no other worker can still send us a GONE
  to turn into a REPORT, so every connection is closed gracefully (the kernel's bytes still
  reach a receiver that reads later) and the worker exits.
- Give-up, `margin` before the deadline: whatever has not reached the kernel is dropped from
  its connection (conn.give_up) and each frame in it is reported to its sender, here with a
  REPORT, on another worker through the handoff link (GONE, and that worker reports); frames
  other workers still hand over are refused (GONE). Then the early end follows at once.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import socket
import termios
from typing import TYPE_CHECKING

from .conn import QUIET

if TYPE_CHECKING:
    from .conn import MsrpConnection
    from .context import WorkerContext

__all__ = ["GracefulStop"]

logger = logging.getLogger(__name__)

MARGIN = 3.0
"""Seconds before the deadline at which undelivered frames are given up and reported (or a
third of drain_timeout when that is shorter): time for GONEs, REPORTs and closes on a busy
machine, where every worker must still be there for its peers' GONEs."""


class GracefulStop:
    def __init__(self, ctx: WorkerContext, started: float, deadline: float) -> None:
        self.ctx = ctx
        self.started = started
        self.give_up_at = deadline - min(MARGIN, (deadline - started) / 3)
        self.closing = False
        ctx.stopping = True
        if ctx.hub is not None:
            ctx.hub.stopping = True
        for conn in list(ctx.conns.values()):
            conn.stop_reading()

    def tick(self, now: float) -> None:
        """Every STOP_POLL seconds until the worker exits (it exits when no connection is
        left, or at the deadline)."""
        ctx, hub = self.ctx, self.ctx.hub
        conns = list(ctx.conns.values())
        for conn in conns:
            conn.stop_reading()  # a connection passed or opened since
            conn.trim_sent()
        if now >= self.give_up_at and not ctx.given_up:
            self._give_up()
        if self.closing:
            self._close_settled()
            return
        if now - self.started < QUIET:
            return
        reading = not ctx.given_up
        if any(conn.unsent or (reading and conn.stream_sink) for conn in conns):
            return
        if hub is not None:
            if hub.sending:
                return
            hub.finish_sending()
            if not hub.settle():
                return
        self.closing = True
        self._close_settled()

    def _close_settled(self) -> None:
        """Close every connection whose close cannot cost the peer our bytes. Closing a
        socket with unread input sends RST, and RST drops what the kernel still holds for the
        peer: a sender still sending (it is not read any more) is closed only once the kernel
        has passed it everything (its REPORTs); the deadline ends the wait."""
        for conn in list(self.ctx.conns.values()):
            unsent_out, unread_in = _kernel_queues(conn)
            if not (unsent_out and unread_in):
                conn.close("relay stopping")

    def _give_up(self) -> None:
        ctx = self.ctx
        ctx.given_up = True
        if ctx.hub is not None:
            ctx.hub.refusing = True
            ctx.hub.unblock_all()
        conns = list(ctx.conns.values())
        for conn in conns:
            conn.stop_reading()  # a streamed frame still being read is not finished now
        # Which connections are cut is decided first: the REPORTs written below must not make
        # their senders' connections look undelivered.
        cut = [conn for conn in conns if not conn.closed and conn.unsent_relayed]
        for conn in cut:
            _discard_input(conn)  # so the abort's close is a FIN after the kernel's bytes
            ctx.report_unsent(conn, conn.give_up())
        ctx.flush_dirty()


def _fd(conn: MsrpConnection) -> int:
    transport = conn.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


def _kernel_queues(conn: MsrpConnection) -> tuple[int, int]:
    """Bytes the kernel has not yet passed to the peer, and bytes received but not read."""
    fd = _fd(conn)
    if fd < 0:
        return 0, 0
    out, unread = array.array("i", [0]), array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, out)
        fcntl.ioctl(fd, termios.FIONREAD, unread)
    except OSError:
        return 0, 0
    return out[0], unread[0]


def _discard_input(conn: MsrpConnection) -> None:
    """Read and drop what the peer sent and we will never read (we stop)."""
    fd = _fd(conn)
    if fd < 0:
        return
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        while sock.recv(1 << 16, socket.MSG_DONTWAIT):
            pass
