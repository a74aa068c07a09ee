"""Handoff links: Unix stream sockets between workers, carrying handoff.py messages.

Strategy:
- Only the owner of a connection writes to it, so frames for one connection never interleave.
  A worker hands the bytes of a frame for a connection it does not own to the owning worker,
  which writes them (DESIGN §2). We pass bytes, not file descriptors: SCM_RIGHTS fd passing
  (kamailio's pass_fd.h) suits moving a whole connection to another worker for good, which we
  do not do for relaying; two processes writing to one socket would need a lock per frame.
- Each hub listens on its own path. Sending to a peer connects lazily to the peer's path and
  keeps the link; messages queue while it connects. The peer answers GONE on the same link, so
  both directions carry messages and use the same codec.
- Batching: what is queued for one destination during one loop iteration goes out in one
  transport write, scheduled once per iteration with `loop.call_soon`. The pieces are joined
  first: one copy, measured faster than `writelines` under both uvloop and asyncio for payloads
  of 100 B to 64 KiB. While the kernel buffer is full the link is paused and messages keep
  queueing, so they leave in one larger write.
- Failure is never silent. Success is not acknowledged: a message counts as delivered once the
  transport has passed all its bytes to the kernel, unless a GONE comes back. The link sets its
  write-buffer limits to 0, so pause_writing/resume_writing say exactly when written bytes are
  still in the transport. When a link cannot connect or breaks, `on_gone` is called for every
  message that was queued or still in the transport. The one blind spot is bytes already in
  the kernel when the receiver closes: a draining worker closes its hub only once its
  connections are gone, and such a frame times out at the sender like one on a lost connection.
- Callbacks run from loop callbacks, never from inside `send`, so a sender can hold state
  across a `send` call without re-entrancy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from .handoff import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    Handoff,
    HandoffDecoder,
    HandoffError,
    HandoffFlags,
    HandoffKind,
)
from .stopstate import StopState

__all__ = ["CloseConn", "Deliver", "HandoffHub", "HandoffStats", "OnControl", "OnGone"]

logger = logging.getLogger(__name__)

Deliver = Callable[[int, memoryview | bytes, int, tuple[int, int], "_Link"], bool]
"""deliver(conid, payload, flags, source, link) -> False when conid is not a live connection of
this worker. `source` is (link id, token): the pieces of one streamed frame share it, so the
owner can keep other frames from interleaving with them; `link` is the link it came on (flow
control may pause it)."""
OnControl = Callable[[Handoff, "_Link"], None]
"""on_control(message, link it came on) for each message that moves a connection."""
OnGone = Callable[[int, int], None]
"""on_gone(conid, token): a message sent to another worker was not delivered."""
CloseConn = Callable[[int], None]
"""close_conn(conid): close a connection of this worker once its queued bytes are written."""

_HEADER_SIZE = HEADER.size
_pack_header = HEADER.pack
_FRAME = HandoffKind.FRAME
_GONE = HandoffKind.GONE
_CLOSE = HandoffKind.CLOSE
_PAUSE = HandoffKind.PAUSE
_RESUME = HandoffKind.RESUME
_NOTICE = HandoffFlags.NOTICE
# A message the sender must hear about if it fails: (end offset in its batch, conid, token).
_Tracked = tuple[int, int, int]


def _nothing(link_id: int) -> None:
    pass


def _ignore(msg: Handoff, link: _Link) -> None:
    logger.warning("handoff: %s for %x ignored", msg.kind.name, msg.conid)


def _no_flow(pause: bool, conid: int, token: int, link_id: int) -> None:
    pass


@dataclass(slots=True)
class HandoffStats:
    """Counters of one hub, written only by its loop."""

    writes: int = 0  # transport writes (batches), all links
    sent: int = 0  # FRAME and CLOSE messages written
    received: int = 0  # messages received, of any kind
    gone_sent: int = 0  # GONE replies queued (deliver returned False)
    gone_received: int = 0  # GONE replies received
    failed: int = 0  # messages reported to on_gone because their link failed


class _Link(asyncio.Protocol):
    """One Unix stream connection to (`dest` set) or from (`dest` None) a peer hub."""

    def __init__(self, hub: HandoffHub, dest: Path | None) -> None:
        self._hub = hub
        self.dest = dest
        self._loop = hub.loop
        self._decoder = HandoffDecoder(hub.max_payload)
        self._transport: asyncio.Transport | None = None
        self._pieces: list[bytes | memoryview] = []  # queued, not yet given to the transport
        self._tracked: list[_Tracked] = []  # messages among _pieces
        self._queued = 0  # bytes in _pieces
        self._inflight: list[_Tracked] = []  # messages whose bytes are still in the transport
        self._paused = False
        self._flush_pending = False
        self._closing = False
        self._closed = False
        self.task: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._blockers: set[Hashable] = set()  # congested destinations that paused our reading
        self._drained: list[Callable[[], None]] = []  # called once all queued bytes are out
        self.peer_done = False
        """An accepted link whose peer half-closed it in a graceful stop: nothing more comes,
        but our GONEs for what it sent still go back (HandoffHub.settle)."""

    def push(
        self, header: bytes, parts: Sequence[bytes | memoryview], size: int, conid: int, token: int
    ) -> None:
        self._pieces.append(header)
        self._pieces.extend(parts)
        self._queued += _HEADER_SIZE + size
        self._tracked.append((self._queued, conid, token))
        if not self._flush_pending:
            self._schedule()

    def push_reply(self, header: bytes) -> None:
        self._pieces.append(header)
        self._queued += len(header)
        if not self._flush_pending:
            self._schedule()

    def send_flow(self, pause: bool, conid: int, token: int = 0) -> None:
        """Tell the peer that connection `conid` here is congested (PAUSE; `token` names a
        stream that may go on) or has drained (RESUME): remoteflow.py. Nothing is sent once
        the link is closing."""
        if not self._closing:
            self.push_reply(_pack_header(_PAUSE if pause else _RESUME, 0, 0, conid, token, 0))

    def block(self, dest: Hashable) -> None:
        """Pause reading this link (a caller that wants every frame from the peer held up;
        relayed frames use per-destination PAUSE instead, remoteflow.py)."""
        if not self._blockers and self._transport is not None and not self._closing:
            self._transport.pause_reading()
        self._blockers.add(dest)

    def unblock(self, dest: Hashable) -> None:
        self._blockers.discard(dest)
        if not self._blockers and self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def when_drained(self, callback: Callable[[], None]) -> None:
        self._drained.append(callback)

    def _notify_drained(self) -> None:
        if self._drained and not self._pieces and not self._paused:
            callbacks, self._drained = self._drained, []
            for callback in callbacks:
                callback()

    def pending_bytes(self) -> int:
        transport = self._transport
        buffered = transport.get_write_buffer_size() if transport is not None else 0
        return self._queued + buffered

    def _schedule(self) -> None:
        if self._transport is not None and not self._paused and not self._closing:
            self._flush_pending = True
            hub = self._hub
            hub._dirty.append(self)
            if not hub.batching:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if not self._flush_pending:
            return  # flushed early, by HandoffHub.flush
        self._flush_pending = False
        if not self._paused and not self._closing:
            self._write()

    def _write(self) -> None:
        transport = self._transport
        if transport is None or not self._pieces or transport.is_closing():
            return  # what is queued is reported by connection_lost
        pieces, tracked, total, was_paused = self._pieces, self._tracked, self._queued, self._paused
        self._pieces, self._tracked, self._queued = [], [], 0
        transport.write(b"".join(pieces))
        stats = self._hub.stats
        stats.writes += 1
        stats.sent += len(tracked)
        left = transport.get_write_buffer_size()
        if was_paused or transport.is_closing():
            # Nothing of this batch reached the kernel yet, or the write failed outright.
            self._inflight.extend(tracked)
        elif left:
            cutoff = total - left
            self._inflight.extend(t for t in tracked if t[0] > cutoff)
        else:
            self._notify_drained()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = t = cast(asyncio.Transport, transport)
        if self._closed:  # connecting was abandoned meanwhile
            t.abort()
            return
        # With both limits at 0, pause_writing means "bytes are left in the transport" and
        # resume_writing means "all of them reached the kernel".
        t.set_write_buffer_limits(high=0, low=0)
        if self.dest is None:
            self._hub._adopt(self)  # shuts the link down if the hub is closing
        self._schedule()

    def data_received(self, data: bytes) -> None:
        hub = self._hub
        hub.before_read()
        try:
            try:
                messages = self._decoder.feed(data)
            except HandoffError as exc:
                logger.warning("handoff link %s: %s; closing it", self.dest or "(accepted)", exc)
                hub._dispatch(self, exc.messages)
                self.shutdown()
                return
            hub._dispatch(self, messages)
        finally:
            hub.after_read()  # what this read produced leaves now

    def eof_received(self) -> bool:
        if self.dest is None and self._hub.stop.stopping:
            # A stopping peer has sent all it will (finish_sending); it still reads.
            self.peer_done = True
            return True
        # The peer closed: what is still queued or in the transport cannot reach it.
        logger.info("handoff link %s: closed by its peer", self.dest or "(accepted)")
        self._closing = True
        self._hub._forget(self)
        if self._transport is not None:
            self._transport.abort()
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._inflight.clear()
        if self._pieces and not self._flush_pending:
            self._schedule()
        else:
            self._notify_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._transport = None
        failed = self._inflight + self._tracked
        self._inflight, self._tracked, self._pieces, self._queued = [], [], [], 0
        if exc is not None:
            logger.info("handoff link %s lost: %s", self.dest or "(accepted)", exc)
        self._hub._link_lost(self, failed)
        callbacks, self._drained = self._drained, []
        for callback in callbacks:  # nothing more will drain: let the waiting sources go
            callback()
        if not self.lost.done():
            self.lost.set_result(None)

    async def connect(self, path: Path) -> None:
        try:
            await self._loop.create_unix_connection(lambda: self, str(path))
        except OSError as exc:
            logger.info("handoff link to %s cannot connect: %s", path, exc)
            self._abandon()
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        if self._transport is None:  # else connection_lost follows from the transport
            self.connection_lost(None)

    def shutdown(self) -> None:
        """Write what is queued, then close; a link still connecting gives up."""
        if self._closing:
            return
        self._closing = True
        self._hub._forget(self)
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


class HandoffHub:
    """This worker's end of the handoff links to every other worker.

    Args:
        own_path: the Unix socket path other workers connect to.
        deliver: `deliver(conid, payload, flags) -> bool` for each FRAME received; False means
            `conid` is not a live connection here, and the sender gets a GONE.
        on_gone: `on_gone(conid, token)` when a peer answers GONE, or when a message could not
            be written because its link failed (never from inside `send`).
        loop: the running event loop (uvloop or asyncio's own).
        close_conn: `close_conn(conid)` for each CLOSE received.
        max_payload: the largest FRAME payload sent or accepted.
        stop: the worker's graceful-stop state (stopstate.py).
    """

    def __init__(
        self,
        own_path: Path,
        deliver: Deliver,
        on_gone: OnGone,
        loop: asyncio.AbstractEventLoop,
        *,
        close_conn: CloseConn,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        stop: StopState | None = None,
    ) -> None:
        self.own_path = own_path
        self.loop = loop
        self.max_payload = max_payload
        self.stats = HandoffStats()
        self._deliver = deliver
        self._on_gone = on_gone
        self._close_conn = close_conn
        self._links: dict[Path, _Link] = {}
        self._accepted: set[_Link] = set()
        self._dying: set[_Link] = set()  # links closing, until connection_lost
        self._server: asyncio.AbstractServer | None = None
        self._own_inode: int | None = None
        self._closed = False
        self._dirty: list[_Link] = []  # links with a flush scheduled
        self.batching = False
        """Inside one read's work: links queue without scheduling a write, because
        after_read writes them (one loop iteration less per read)."""
        self.before_read: Callable[[], None] = self._begin_batch
        self.after_read: Callable[[], None] = self.flush
        """Called before and after each read's messages are delivered (the worker batches
        its connections' writes there too)."""
        self.on_control: OnControl = _ignore
        """Called for each message that moves a connection (colocate.py)."""
        self.on_flow: Callable[[bool, int, int, int], None] = _no_flow
        """on_flow(pause, conid, token, link id) for each PAUSE/RESUME received
        (remoteflow.py)."""
        self.on_link_lost: Callable[[int], None] = _nothing
        """on_link_lost(link id) when a link closes: the streams that came on it (sources
        (link id, token)) send no more pieces (their worker died, say), and the PAUSEs that
        came on it are void (remoteflow.py)."""
        self.stop = stop or StopState()
        """Stopping: a peer's EOF means "done sending", not "gone" (finish_sending); given
        up: answer GONE to every FRAME, this worker delivers nothing more."""

    async def start(self) -> None:
        """Listen on `own_path` (mode 0600), replacing a stale socket file left there."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.own_path).st_mode):
                os.unlink(self.own_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.own_path))
            # Before listen() nobody can connect, so there is no window with wider modes.
            os.chmod(self.own_path, 0o600)
            self._own_inode = os.stat(self.own_path).st_ino
            sock.setblocking(False)
            self._server = await self.loop.create_unix_server(lambda: _Link(self, None), sock=sock)
        except BaseException:
            sock.close()
            raise

    def send(
        self,
        dest_path: Path,
        conid: int,
        token: int,
        parts: Sequence[bytes | memoryview],
        flags: int = 0,
    ) -> None:
        """Queue a FRAME: write `parts` (joined) to connection `conid`, owned by the worker
        listening on `dest_path`. It leaves with everything else queued for `dest_path` in this
        loop iteration, in order. Parts are kept, not copied, until that write at the end of the
        iteration (or later, while the link connects or is paused): they must not change before.
        Parts must be byte-sized (bytes, or memoryviews of format "B").

        Raises:
            ValueError: the payload is over `max_payload`, or a field is out of range.
            RuntimeError: the hub is closed.
        """
        size = sum(map(len, parts))
        if size > self.max_payload:
            raise ValueError(f"payload of {size} bytes is over the limit of {self.max_payload}")
        try:
            header = _pack_header(_FRAME, flags, 0, conid, token, size)
        except struct.error as exc:
            raise ValueError(f"handoff header field out of range: {exc}") from None
        self._link(dest_path).push(header, parts, size, conid, token)

    def send_close(self, dest_path: Path, conid: int, token: int = 0) -> None:
        """Queue a CLOSE: close `conid` after everything queued for it is written.

        Raises:
            ValueError: a field is out of range.
            RuntimeError: the hub is closed.
        """
        try:
            header = _pack_header(_CLOSE, 0, 0, conid, token, 0)
        except struct.error as exc:
            raise ValueError(f"handoff header field out of range: {exc}") from None
        self._link(dest_path).push(header, (), 0, conid, token)

    def _begin_batch(self) -> None:
        self.batching = True

    def flush(self) -> None:
        """Write what is queued now instead of at the end of the loop iteration: the end of
        one read's work, so its frames do not wait for other ready sockets (latency)."""
        self.batching = False
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            link._flush()

    def send_control(
        self, dest_path: Path, kind: HandoffKind, conid: int, token: int = 0, payload: bytes = b""
    ) -> None:
        """Queue a message of the connection-moving kinds (MOVED, FENCE, ...). It is not
        tracked: if its link fails it is lost, and handover.py's timeouts cover that."""
        header = _pack_header(kind, 0, 0, conid, token, len(payload))
        link = self._link(dest_path)
        link.push_reply(header + payload if payload else header)

    # -- graceful stop (stopping.py): every worker finishes with its peers ------------------

    def refuse(self, source: Hashable, conid: int) -> None:
        """A FRAME delivered earlier, `source` = (link id, token) as given to deliver(), will
        not be written after all: answer GONE, so its sender reports it (handoff_gone)."""
        if not isinstance(source, tuple) or len(source) != 2:
            return
        link_id, token = source
        for link in (*self._accepted, *self._links.values(), *self._dying):
            if id(link) == link_id:
                self.stats.gone_sent += 1
                link.push_reply(_pack_header(_GONE, 0, 0, conid, token, 0))
                return
        logger.warning("handoff: a frame for %x cannot be refused: its link is gone", conid)

    def unblock_all(self) -> None:
        """Read every link again: what peers still send is refused now, never written."""
        for link in (*self._accepted, *self._links.values()):
            for dest in list(link._blockers):
                link.unblock(dest)

    @property
    def sending(self) -> bool:
        """Something queued for a peer has not reached the kernel yet."""
        return any(link.pending_bytes() for link in self._links.values())

    def finish_sending(self) -> None:
        """Half-close every link we opened (nothing more will be sent on it): the peer closes
        it once it has written, or refused, everything we sent (settle)."""
        for link in list(self._links.values()):
            transport = link._transport
            if transport is not None and not link.pending_bytes() and transport.can_write_eof():
                transport.write_eof()
                self._forget(link)

    def settle(self) -> bool:
        """Call once everything peers handed us is written or refused: close the links whose
        stopping peer is done sending. True when no link is left: no peer can still refuse
        a frame we sent (so our senders may close), and none still sends to us."""
        for link in list(self._accepted):
            if link.peer_done:
                link.shutdown()
        return not (self._links or self._accepted or self._dying)

    def pending_bytes(self, dest_path: Path) -> int:
        """Bytes queued for `dest_path` and not yet passed to the kernel (for backpressure)."""
        link = self._links.get(dest_path)
        return 0 if link is None else link.pending_bytes()

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, write what is queued, close every link and remove `own_path`.
        Links that cannot finish writing within `timeout` seconds are aborted (on_gone is
        called for what they held)."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        links = [*self._links.values(), *self._accepted, *self._dying]
        for link in links:
            link.shutdown()
        await self._wait_lost(links, timeout)
        if self._server is not None:
            await self._server.wait_closed()
        self._unlink_own_path()

    def when_drained(self, dest_path: Path, callback: Callable[[], None]) -> None:
        """Call `callback` once everything queued for `dest_path` has reached the kernel (or
        the link is gone): a sender paused for back-pressure resumes then."""
        link = self._links.get(dest_path)
        if link is None:
            self.loop.call_soon(callback)
        else:
            link.when_drained(callback)

    def _dispatch(self, link: _Link, messages: list[Handoff]) -> None:
        self.stats.received += len(messages)
        deliver = self._deliver
        refusing = self.stop.given_up
        for msg in messages:
            # A failing callback costs its own message, not the link and the others on it.
            try:
                if msg.kind is _FRAME:
                    source = (id(link), msg.token)
                    refused = refusing and not msg.flags & _NOTICE
                    if refused or not deliver(msg.conid, msg.payload, msg.flags, source, link):
                        self.stats.gone_sent += 1
                        link.push_reply(_pack_header(_GONE, 0, 0, msg.conid, msg.token, 0))
                elif msg.kind is _GONE:
                    self.stats.gone_received += 1
                    self._on_gone(msg.conid, msg.token)
                elif msg.kind is _CLOSE:
                    self._close_conn(msg.conid)
                elif msg.kind is _PAUSE or msg.kind is _RESUME:
                    self.on_flow(msg.kind is _PAUSE, msg.conid, msg.token, id(link))
                else:
                    self.on_control(msg, link)
            except Exception:
                logger.exception("handoff: %s callback failed for %x", msg.kind.name, msg.conid)

    def _adopt(self, link: _Link) -> None:
        if self._closed:
            link.shutdown()
        else:
            self._accepted.add(link)

    def _forget(self, link: _Link) -> None:
        """`link` is closing: new messages for its destination need a new link."""
        if link.dest is not None and self._links.get(link.dest) is link:
            del self._links[link.dest]
        self._accepted.discard(link)
        self._dying.add(link)

    def _link_lost(self, link: _Link, failed: list[_Tracked]) -> None:
        self._forget(link)
        self._dying.discard(link)
        try:
            self.on_link_lost(id(link))
        except Exception:
            logger.exception("handoff: on_link_lost callback failed")
        if failed:
            logger.info("handoff link %s: %d messages not delivered", link.dest, len(failed))
            self.stats.failed += len(failed)
        on_gone = self._on_gone
        for _end, conid, token in failed:
            try:
                on_gone(conid, token)
            except Exception:
                logger.exception("handoff: on_gone callback failed for %x", conid)

    def _link(self, dest: Path) -> _Link:
        link = self._links.get(dest)
        if link is None:
            if self._closed:
                raise RuntimeError("handoff hub is closed")
            link = self._links[dest] = _Link(self, dest)
            link.task = self.loop.create_task(link.connect(dest))
        return link

    async def _wait_lost(self, links: list[_Link], timeout: float) -> None:
        if not links:
            return
        _done, pending = await asyncio.wait([link.lost for link in links], timeout=timeout)
        for link in links:
            if not link.lost.done():
                link.abort()
        if pending:
            await asyncio.wait(pending)
        tasks = [link.task for link in links if link.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _unlink_own_path(self) -> None:
        # Remove the socket only if it is still ours (a successor may have bound the path).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.own_path).st_ino == self._own_inode:
                os.unlink(self.own_path)
