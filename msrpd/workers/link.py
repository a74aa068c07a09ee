"""Link: one Unix stream connection between two workers' hubs, and its flow control.

Strategy:
- A link is opened to (`dest` set) or accepted from (`dest` None) a peer hub; both directions
  carry handoff.py messages. What the link reads goes to its owner (the hub, links.py) whole:
  the link decodes it and hands the messages to its owner, which dispatches them.
- Writing: messages queue in a LinkQueue (linkqueue.py). The first message of a batch asks the
  owner to `schedule` a flush (once per loop iteration, or at the end of the read being
  worked on); the flush writes the whole queue in one transport write.
- Flow control: the transport's write-buffer limits are 0, so pause_writing/resume_writing say
  exactly when written bytes are still in the transport. While paused, messages keep queueing
  and leave in one larger write on resume_writing. `when_drained` callbacks run once nothing
  is queued or held (or the link is gone). `block`/`unblock` pause reading for as long as any
  blocker wants it.
- Failure: when the link cannot connect or breaks, the owner's `lost` gets every tracked
  message that was queued or still in the transport (linkqueue.py), so each sender hears.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from .handoff import HEADER, Handoff, HandoffDecoder, HandoffError, HandoffKind
from .linkqueue import LinkQueue, Tracked

__all__ = ["HandoffStats", "Link", "LinkOwner"]

logger = logging.getLogger(__name__)

_pack_header = HEADER.pack
_PAUSE = HandoffKind.PAUSE
_RESUME = HandoffKind.RESUME


@dataclass(slots=True)
class HandoffStats:
    """Counters of one hub, written only by its loop."""

    writes: int = 0  # transport writes (batches), all links
    sent: int = 0  # FRAME and CLOSE messages written
    received: int = 0  # messages received, of any kind
    gone_sent: int = 0  # GONE replies queued (deliver returned False)
    gone_received: int = 0  # GONE replies received
    failed: int = 0  # messages reported to on_gone because their link failed


class LinkOwner(Protocol):
    """What a link needs of the hub that owns it (links.py)."""

    @property
    def stats(self) -> HandoffStats: ...

    @property
    def stopping(self) -> bool:
        """Graceful stop: an accepted link's EOF means "done sending", not "gone"."""
        ...

    def schedule(self, link: Link) -> None:
        """`link` has something to write: call its `flush` soon."""

    def received(self, link: Link, messages: list[Handoff], error: str | None) -> None:
        """The messages a read from `link` completed; `error`: after them the stream cannot
        be read further (the link must close)."""

    def adopt(self, link: Link) -> None:
        """An accepted link is connected."""

    def forget(self, link: Link) -> None:
        """`link` is closing: nothing new may be queued on it."""

    def lost(self, link: Link, failed: list[Tracked]) -> None:
        """`link` is closed; `failed` did not get through."""


class Link(asyncio.Protocol):
    """One Unix stream connection to (`dest` set) or from (`dest` None) a peer hub."""

    def __init__(
        self, owner: LinkOwner, dest: Path | None, loop: asyncio.AbstractEventLoop, max_payload: int
    ) -> None:
        self._owner = owner
        self.dest = dest
        self._decoder = HandoffDecoder(max_payload)
        self._transport: asyncio.Transport | None = None
        self._queue = LinkQueue()
        self._paused = False
        self._flush_pending = False
        self._closing = False
        self._closed = False
        self.task: asyncio.Task[None] | None = None
        """The connecting task of a link we open (the owner creates it)."""
        self.lost: asyncio.Future[None] = loop.create_future()
        self._blockers: set[Hashable] = set()  # whoever paused our reading
        self._drained: list[Callable[[], None]] = []  # called once all queued bytes are out
        self.peer_done = False
        """An accepted link whose peer half-closed it in a graceful stop: nothing more comes,
        but our GONEs for what it sent still go back (HandoffHub.settle)."""

    # -- writing ----------------------------------------------------------------------------

    def push(
        self, header: bytes, parts: Sequence[bytes | memoryview], size: int, conid: int, token: int
    ) -> None:
        """Queue a tracked message (FRAME, CLOSE)."""
        self._queue.push(header, parts, size, conid, token)
        if not self._flush_pending:
            self._schedule()

    def push_reply(self, message: bytes) -> None:
        """Queue an untracked message (GONE, PAUSE, RESUME, connection-moving kinds)."""
        self._queue.push_reply(message)
        if not self._flush_pending:
            self._schedule()

    def send_flow(self, pause: bool, conid: int, token: int = 0) -> None:
        """Tell the peer that connection `conid` here is congested (PAUSE; `token` names a
        stream that may go on) or has drained (RESUME): remoteflow.py. Nothing is sent once
        the link is closing."""
        if not self._closing:
            self.push_reply(_pack_header(_PAUSE if pause else _RESUME, 0, 0, conid, token, 0))

    def pending_bytes(self) -> int:
        """Bytes queued or still in the transport."""
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._queue.queued + buffered

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._drained.append(callback)

    def flush(self) -> None:
        """Write what is queued (the owner calls this once per `schedule`)."""
        if not self._flush_pending:
            return  # flushed early, by the owner
        self._flush_pending = False
        if not self._paused and not self._closing:
            self._write()

    def _schedule(self) -> None:
        if self._transport is not None and not self._paused and not self._closing:
            self._flush_pending = True
            self._owner.schedule(self)

    def _write(self) -> None:
        transport = self._transport
        if transport is None or not self._queue or transport.is_closing():
            return  # what is queued is reported by connection_lost
        queued, was_paused = self._queue.queued, self._paused
        pieces, tracked = self._queue.take()
        if len(pieces) == 1:
            transport.write(pieces[0])
        else:
            transport.writelines(pieces)
        stats = self._owner.stats
        stats.writes += 1
        stats.sent += len(tracked)
        left = transport.get_write_buffer_size()
        # Paused, nothing of this batch reached the kernel yet; closing, the write failed.
        stuck = was_paused or transport.is_closing()
        self._queue.written(tracked, queued, None if stuck else left)
        if not stuck and not left:
            self._notify_drained()

    def _notify_drained(self) -> None:
        if self._drained and not self._queue and not self._paused:
            callbacks, self._drained = self._drained, []
            for callback in callbacks:
                callback()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._queue.drained()
        if self._queue and not self._flush_pending:
            self._schedule()
        else:
            self._notify_drained()

    # -- reading ----------------------------------------------------------------------------

    def block(self, blocker: Hashable) -> None:
        """Pause reading this link (a caller that wants every frame from the peer held up;
        relayed frames use per-destination PAUSE instead, remoteflow.py)."""
        if not self._blockers and self._transport is not None and not self._closing:
            self._transport.pause_reading()
        self._blockers.add(blocker)

    def unblock(self, blocker: Hashable) -> None:
        self._blockers.discard(blocker)
        if not self._blockers and self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def unblock_all(self) -> None:
        for blocker in list(self._blockers):
            self.unblock(blocker)

    def data_received(self, data: bytes) -> None:
        try:
            messages, error = self._decoder.feed(data), None
        except HandoffError as exc:
            messages, error = exc.messages, str(exc)
        self._owner.received(self, messages, error)

    def eof_received(self) -> bool:
        if self.dest is None and self._owner.stopping:
            # A stopping peer has sent all it will (finish_sending); it still reads.
            self.peer_done = True
            return True
        # The peer closed: what is still queued or in the transport cannot reach it.
        logger.info("handoff link %s: closed by its peer", self.dest or "(accepted)")
        self._closing = True
        self._owner.forget(self)
        if self._transport is not None:
            self._transport.abort()
        return False

    # -- opening and closing ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = t = cast(asyncio.Transport, transport)
        if self._closed:  # connecting was abandoned meanwhile
            t.abort()
            return
        # With both limits at 0, pause_writing means "bytes are left in the transport" and
        # resume_writing means "all of them reached the kernel".
        t.set_write_buffer_limits(high=0, low=0)
        if self.dest is None:
            self._owner.adopt(self)  # shuts the link down if the hub is closing
        self._schedule()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._transport = None
        failed = self._queue.fail()
        if exc is not None:
            logger.info("handoff link %s lost: %s", self.dest or "(accepted)", exc)
        self._owner.lost(self, failed)
        callbacks, self._drained = self._drained, []
        for callback in callbacks:  # nothing more will drain: let the waiting sources go
            callback()
        if not self.lost.done():
            self.lost.set_result(None)

    async def connect(self, loop: asyncio.AbstractEventLoop, path: Path) -> None:
        try:
            await loop.create_unix_connection(lambda: self, str(path))
        except OSError as exc:
            logger.info("handoff link to %s cannot connect: %s", path, exc)
            self._abandon()
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        if self._transport is None:  # else connection_lost follows from the transport
            self.connection_lost(None)

    def finish_sending(self) -> bool:
        """Half-close the link once nothing is left to write: the peer closes it once it has
        written, or refused, everything we sent. False while bytes are still pending."""
        transport = self._transport
        if transport is None or self.pending_bytes() or not transport.can_write_eof():
            return False
        transport.write_eof()
        return True

    def shutdown(self) -> None:
        """Write what is queued, then close; a link still connecting gives up."""
        if self._closing:
            return
        self._closing = True
        self._owner.forget(self)
        if self._transport is None:
            self.abort()
            return
        self._write()
        self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
            return
        # A task cancelled before its first step never runs connect(), so report here.
        if self.task is not None:
            self.task.cancel()
        self._abandon()
