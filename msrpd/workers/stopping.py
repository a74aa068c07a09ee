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
  its connection (conn.give_up: its socket is shut for writing first, so no byte of a frame
  counted as dropped reaches the peer later) and each frame in it is reported to its sender,
  here with a REPORT, on another worker through the handoff link (GONE, and that worker
  reports); frames other workers still hand over are refused (GONE). Then the early end
  follows at once. The margin grows with the frames still queued: each costs a GONE and a
  REPORT to build.
- Bytes in the kernel are delivered only if the socket is never reset: closing a socket with
  unread input sends RST, and so does input arriving after the close, and RST drops the send
  queue. So from the stop on, what a receiver (a connection we relayed frames to) sends while
  our bytes to it are not all acknowledged, its 200s, is read and dropped each tick, a bounded
  amount per connection, so it never blocks writing them; a sender's new frames wait in the
  kernel. A connection is closed through a duplicate of its socket that is kept (shut down
  for writing: a FIN after our bytes) until the peer has acknowledged every byte we sent
  (TIOCOUTQ is 0) and gone quiet, or has closed, or the deadline comes; read before the
  final close, so it is a FIN unless the peer keeps sending after it has everything.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import socket
import termios
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .stopstate import QUIET

if TYPE_CHECKING:
    from .context import WorkerContext
    from .gone import GoneReports
    from .outbox import Outbox
    from .transports.base import Wire

__all__ = ["GracefulStop"]

logger = logging.getLogger(__name__)

MARGIN = 3.0
"""Seconds before the deadline at which undelivered frames are given up and reported (or half
of drain_timeout when that is shorter): time for GONEs, REPORTs and closes on a busy machine,
where every worker must still be there for its peers' GONEs, and for a worker that took the
signal late (the supervisor kills one second after its own deadline)."""
PER_FRAME = 100e-6
"""Seconds of margin per relayed frame still queued here: its GONE, its REPORT (about 25 us
each measured, doubled for a loaded machine), and the REPORT's way to the sender."""
DISCARD_PER_TICK = 1 << 18
"""Bytes read and dropped per connection per tick while stopping: enough to keep a receiver
that answers every frame from filling the socket, bounded so a flooding peer cannot keep the
loop reading."""


class Closing(Protocol):
    """What a connection being closed is asked here (conn.MsrpConnection)."""

    conid: int
    closed: bool
    out: Outbox
    wire: Wire


@dataclass(slots=True, eq=False)
class _Lingering:
    sock: socket.socket
    """A duplicate of the connection's socket: it stays open when the transport closes."""
    conn: Closing
    shut: bool = False
    """Shut down for writing (once the transport had written all it held)."""
    heard: float = 0.0
    """When the peer last sent something (monotonic)."""
    unread: int = 0
    """Bytes it had sent that we had not read, last tick."""
    acked: float = 0.0
    """Since when the peer has acknowledged everything (0: it has not)."""


class GracefulStop:
    def __init__(
        self, ctx: WorkerContext, reports: GoneReports, started: float, deadline: float
    ) -> None:
        self.ctx = ctx
        self.reports = reports
        self.started = started
        self.deadline = deadline
        self.margin = min(MARGIN, (deadline - started) / 2)
        self.give_up_at = deadline - self.margin
        self.closing = False
        self.kept: set[int] = set()
        """Connection ids whose socket is in `lingering` (or was)."""
        self.lingering: dict[int, _Lingering] = {}
        """fd -> the socket of a connection being closed, kept until its peer has it all."""
        ctx.stop.stopping = True
        for conn in list(ctx.conns.values()):
            conn.stop_reading()
        # The test's and the operator's record of when this worker stopped reading.
        logger.info("worker %d: stopping, reading no new frame", ctx.ident.slot)

    @property
    def finished(self) -> bool:
        """Nothing is left to deliver, report or close: the worker may exit."""
        mover = self.ctx.mover
        return (
            self.closing
            and not self.ctx.conns
            and not self.lingering
            and (mover is None or not mover.busy())
        )

    def exit(self) -> None:
        """The worker exits now: read what the peers sent once more, so the kernel's close of
        what is left is a FIN after its bytes, not a RST."""
        logger.info(
            "worker %d: stop deadline: %s, %d connections, %d sockets closing (unacked %s)",
            self.ctx.ident.slot,
            "closing" if self.closing else "not settled",
            len(self.ctx.conns),
            len(self.lingering),
            [_queues(fd)[0] for fd in self.lingering][:8],
        )
        for conn in list(self.ctx.conns.values()):
            if not conn.closed:
                _discard(_fd(conn))
        for fd in list(self.lingering):
            _discard(fd)

    def tick(self, now: float) -> None:
        """Every STOP_POLL seconds until the worker exits (it exits when no connection is
        left, or at the deadline)."""
        ctx, hub = self.ctx, self.ctx.hub
        conns = list(ctx.conns.values())
        queued = 0
        for conn in conns:
            conn.stop_reading()  # a connection passed or opened since
            out = conn.out
            out.trim_sent()
            queued += len(out.sent_log.records)
            fd = -1 if conn.may_read or conn.closed or not out.sent_log.relayed else _fd(conn)
            if fd >= 0 and _queues(fd)[0]:
                # A receiver still getting our bytes: read (and drop) its 200s, or it may
                # block writing them and read no more; a flooding sender waits in the kernel.
                _discard(fd)
        self._linger(now)
        margin = min(max(self.margin, queued * PER_FRAME), self.deadline - self.started - QUIET)
        if now >= self.deadline - margin and not ctx.stop.given_up:
            self._give_up()
        if self.closing:
            self._close_settled()
            return
        if now - self.started < QUIET:
            return
        reading = not ctx.stop.given_up
        # A frame waiting for a value (an AUTH's lookup, conn.wait_for) was read before the
        # stop: it is answered first (its wait ends within users_timeout).
        if any(
            conn.unsent or (reading and (conn.stream_sink or conn.intake.waiting is not None))
            for conn in conns
        ):
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
        """Close every connection; what the kernel still holds for its peer keeps going out
        through the duplicate kept (_linger)."""
        for conn in list(self.ctx.conns.values()):
            self._keep(conn)
            conn.close("relay stopping", going_away=True)

    def _keep(self, conn: Closing) -> None:
        """Keep the socket of `conn` open past its close, for _linger."""
        fd = -1 if conn.conid in self.kept else _fd(conn)
        if fd >= 0:
            self.kept.add(conn.conid)
            with contextlib.suppress(OSError):
                # The fd is shared with the transport's, so it stays non-blocking: the socket
                # object is only used to shut down and close it.
                sock = socket.socket(fileno=os.dup(fd))
                self.lingering[sock.fileno()] = _Lingering(sock, conn)

    def _linger(self, now: float) -> None:
        """Read and drop what the peers of closed connections send, and close each for good
        once its peer has closed, or has acknowledged all we sent and gone quiet (a client
        answers the last frames it reads): then no RST can drop our bytes any more."""
        for fd, item in list(self.lingering.items()):
            if item.conn.closed and not item.shut:
                # The transport has written all it held (or dropped it, give_up): a FIN
                # after the kernel's bytes tells a reading peer that nothing more comes.
                with contextlib.suppress(OSError):
                    item.sock.shutdown(socket.SHUT_WR)
                item.shut, item.heard = True, now
            unacked, unread = _queues(fd)
            if unread != item.unread:
                item.heard, item.unread = now, unread
            if unacked or not item.shut:
                item.acked = 0.0
                # Read a receiver while it reads: its 200s must not block it. A sender is not
                # read: flooding us, it would only take the CPU its own reading needs.
                ended = item.conn.out.sent_log.relayed and _discard(fd)
            else:
                item.acked = item.acked or now
                ended = False
            # A peer that still sends may still be reading what its kernel holds (a client
            # answers each frame it reads): a close would make its next write a RST, so it
            # is closed once quiet. A flooding sender is not read once it has all our bytes:
            # it fills our buffer and goes quiet, and a RST then costs it nothing.
            if ended or (item.acked and now - item.heard > QUIET):
                _discard(fd)  # a FIN, unless it sent more than we read here
                item.sock.close()
                del self.lingering[fd]

    def _give_up(self) -> None:
        ctx = self.ctx
        ctx.stop.given_up = True  # the hub refuses every FRAME from now on (GONE)
        if ctx.hub is not None:
            ctx.hub.unblock_all()
        conns = list(ctx.conns.values())
        for conn in conns:
            conn.stop_reading()  # a streamed frame still being read is not finished now
            if conn.holding and not conn.closed:
                # Just moved here, and its old worker's RELEASE may not come now: write what
                # waits for it (the 200s to a sender among it), or give it up below.
                conn.release()
        # Which connections are cut is decided first: the REPORTs written below must not make
        # their senders' connections look undelivered.
        cut = [conn for conn in conns if not conn.closed and conn.unsent_relayed]
        for conn in cut:
            self._keep(conn)  # the kernel's bytes still go out after the abort
            self.reports.report_unsent(conn, conn.give_up())
        ctx.batch.flush_dirty()


def _fd(conn: Closing) -> int:
    transport = conn.wire.transport
    sock = None if transport is None else transport.get_extra_info("socket")
    return -1 if sock is None else int(sock.fileno())


def _queues(fd: int) -> tuple[int, int]:
    """Bytes sent and not yet acknowledged by the peer (or not sent), and bytes received and
    not read, of socket `fd`."""
    if fd < 0:
        return 0, 0
    out, unread = array.array("i", [0]), array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.TIOCOUTQ, out)
        fcntl.ioctl(fd, termios.FIONREAD, unread)
    except OSError:
        return 0, 0
    return out[0], unread[0]


def _discard(fd: int) -> bool:
    """Read and drop up to DISCARD_PER_TICK bytes the peer sent and we will never read (we
    stop); True when the peer has closed (or the socket failed)."""
    if fd < 0:
        return False
    left = DISCARD_PER_TICK
    try:
        while left > 0:
            data = os.read(fd, min(left, 1 << 16))
            if not data:
                return True
            left -= len(data)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return False
