"""HandoffHub: this worker's end of the handoff links to every other worker (DESIGN §2).

Strategy:
- Only the owner of a connection writes to it, so frames for one connection never interleave.
  A worker hands the bytes of a frame for a connection it does not own to the owning worker,
  which writes them. We pass bytes, not file descriptors: SCM_RIGHTS fd passing (kamailio's
  pass_fd.h) suits moving a whole connection to another worker for good (migration), not
  relaying; two processes writing to one socket would need a lock per frame.
- Each hub listens on its own path. Sending to a peer connects lazily to the peer's path and
  keeps the link (link.py); messages queue while it connects. The peer answers GONE on the
  same link, so both directions carry messages and use the same codec (handoff.py).
- Batching: what is queued for one destination during one loop iteration goes out in one
  transport write, scheduled once per iteration with `loop.call_soon`; inside one read's work
  (`batching`) no callback is scheduled and `flush` writes at the end of the read.
- The hub dispatches what its links read by kind to its HubHandler, given at construction:
  FRAME to `deliver` (False: the connection is not here, and a GONE goes back), GONE to
  `on_gone`, CLOSE to `close_conn`, PAUSE/RESUME to `on_flow`, the connection-moving kinds to
  `on_control`. A failing callback costs its own message, not the link and the others on it.
- Failure is never silent. Success is not acknowledged: a message counts as delivered once the
  transport has passed all its bytes to the kernel, unless a GONE comes back. When a link
  cannot connect or breaks, `on_gone` is called for every message that was queued or still in
  the transport (linkqueue.py). The one blind spot is bytes already in the kernel when the
  receiver closes: a draining worker closes its hub only once its connections are gone, and
  such a frame times out at the sender like one on a lost connection.
- Callbacks run from loop callbacks, never from inside `send`, so a sender can hold state
  across a `send` call without re-entrancy.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Protocol

from .handoff import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    Handoff,
    HandoffFlags,
    HandoffKind,
)
from .hubsocket import HubSocket
from .link import HandoffStats, Link
from .linkqueue import Tracked
from .stopstate import StopState

__all__ = ["HandoffHub", "HubHandler"]

logger = logging.getLogger(__name__)

_pack_header = HEADER.pack
_FRAME = HandoffKind.FRAME
_GONE = HandoffKind.GONE
_CLOSE = HandoffKind.CLOSE
_PAUSE = HandoffKind.PAUSE
_RESUME = HandoffKind.RESUME
_NOTICE = HandoffFlags.NOTICE


class HubHandler(Protocol):
    """What a hub calls: the worker's side of its links. Each call comes from a loop callback
    (a link's read, or a link closing), never from inside a `send`."""

    def before_read(self) -> None:
        """One read's messages are about to be dispatched."""

    def after_read(self) -> None:
        """One read's messages were dispatched (also after a read that broke the link): what
        they produced may be written now."""

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        """A FRAME that came on `link` for connection `conid`. False when `conid` is not a live
        connection here (the sender gets a GONE). `source` is (id(link), token): the pieces of
        one streamed frame share it, so the owner can keep other frames from interleaving with
        them. `payload` may be a view into the link's buffer: copy what outlives the call."""
        ...

    def on_gone(self, conid: int, token: int) -> None:
        """A message sent to another worker was not delivered (a GONE came back, or its link
        failed)."""

    def close_conn(self, conid: int) -> None:
        """Close connection `conid` once its queued bytes are written (a CLOSE came)."""

    def on_flow(self, pause: bool, conid: int, token: int, link_id: int) -> None:
        """A PAUSE or RESUME for our connection `conid` came on link `link_id` (remoteflow.py)."""

    def on_control(self, link: Link, msg: Handoff) -> None:
        """A connection-moving message (MOVED, FENCE, ...) came on `link` (migration)."""

    def on_link_lost(self, link_id: int) -> None:
        """Link `link_id` closed: the streams that came on it (sources (link id, token)) send
        no more pieces, and the PAUSEs that came on it are void (remoteflow.py)."""


class HandoffHub:
    """This worker's end of the handoff links to every other worker.

    Args:
        own_path: the Unix socket path other workers connect to.
        loop: the running event loop (uvloop or asyncio's own).
        handler: what the hub calls for the messages its links bring (HubHandler).
        max_payload: the largest FRAME payload sent or accepted.
        stop: the worker's graceful-stop state (stopstate.py).
    """

    def __init__(
        self,
        own_path: Path,
        loop: asyncio.AbstractEventLoop,
        handler: HubHandler,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        stop: StopState | None = None,
    ) -> None:
        self._socket = HubSocket(own_path)
        self.loop = loop
        self.max_payload = max_payload
        self.stats = HandoffStats()
        self._handler = handler
        self._links: dict[Path, Link] = {}
        self._accepted: set[Link] = set()
        self._dying: set[Link] = set()  # links closing, until connection_lost
        self._closed = False
        self._dirty: list[Link] = []  # links with a flush scheduled
        self.batching = False
        """Inside one read's work: links queue without scheduling a write, because the end
        of the read (`flush`) writes them (one loop iteration less per read)."""
        self.stop = stop or StopState()
        """Stopping: a peer's EOF means "done sending", not "gone" (finish_sending); given
        up: answer GONE to every FRAME, this worker delivers nothing more."""

    @property
    def stopping(self) -> bool:
        """Graceful stop: an accepted link's EOF means "done sending" (link.py)."""
        return self.stop.stopping

    async def start(self) -> None:
        """Listen on `own_path` (mode 0600), replacing a stale socket file left there."""
        await self._socket.listen(self.loop, lambda: Link(self, None, self.loop, self.max_payload))

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

    def flush(self) -> None:
        """Write what is queued now instead of at the end of the loop iteration: the end of
        one read's work, so its frames do not wait for other ready sockets (latency)."""
        self.batching = False
        dirty, self._dirty = self._dirty, []
        for link in dirty:
            link.flush()

    def send_control(
        self, dest_path: Path, kind: HandoffKind, conid: int, token: int = 0, payload: bytes = b""
    ) -> None:
        """Queue a message of the connection-moving kinds (MOVED, FENCE, ...), a RESPONSE or
        a CLOSED. It is not tracked: if its link fails it is lost; handover.py's timeouts
        cover a lost move message, the transaction timeout a lost RESPONSE or CLOSED."""
        header = _pack_header(kind, 0, 0, conid, token, len(payload))
        self._link(dest_path).push_reply(header + payload if payload else header)

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
            link.unblock_all()

    @property
    def sending(self) -> bool:
        """Something queued for a peer has not reached the kernel yet."""
        return any(link.pending_bytes() for link in self._links.values())

    def finish_sending(self) -> None:
        """Half-close every link we opened (nothing more will be sent on it): the peer closes
        it once it has written, or refused, everything we sent (settle)."""
        for link in list(self._links.values()):
            if link.finish_sending():
                self.forget(link)

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

    @property
    def closed(self) -> bool:
        """close() has begun: no message can be sent any more."""
        return self._closed

    async def close(self, timeout: float = 5.0) -> None:
        """Stop listening, write what is queued, close every link and remove `own_path`.
        Links that cannot finish writing within `timeout` seconds are aborted (on_gone is
        called for what they held)."""
        if self._closed:
            return
        self._closed = True
        self._socket.stop()
        links = [*self._links.values(), *self._accepted, *self._dying]
        for link in links:
            link.shutdown()
        await self._wait_lost(links, timeout)
        await self._socket.remove()

    def when_drained(self, dest_path: Path, callback: Callable[[], None]) -> None:
        """Call `callback` once everything queued for `dest_path` has reached the kernel (or
        the link is gone): a sender paused for back-pressure resumes then."""
        link = self._links.get(dest_path)
        if link is None:
            self.loop.call_soon(callback)
        else:
            link.when_drained(callback)

    # -- what the links call (link.py's LinkOwner) ------------------------------------------

    def schedule(self, link: Link) -> None:
        self._dirty.append(link)
        if not self.batching:
            self.loop.call_soon(link.flush)

    def received(self, link: Link, messages: list[Handoff], error: str | None) -> None:
        handler = self._handler
        self.batching = True
        handler.before_read()
        try:
            self._dispatch(link, messages)
            if error is not None:
                logger.warning("handoff link %s: %s; closing it", link.dest or "(accepted)", error)
                link.shutdown()
        finally:
            handler.after_read()
            self.flush()  # what this read produced leaves now

    def adopt(self, link: Link) -> None:
        if self._closed:
            link.shutdown()
        else:
            self._accepted.add(link)

    def forget(self, link: Link) -> None:
        """`link` is closing: new messages for its destination need a new link."""
        if link.dest is not None and self._links.get(link.dest) is link:
            del self._links[link.dest]
        self._accepted.discard(link)
        self._dying.add(link)

    def lost(self, link: Link, failed: list[Tracked]) -> None:
        self.forget(link)
        self._dying.discard(link)
        handler = self._handler
        try:
            handler.on_link_lost(id(link))
        except Exception:
            logger.exception("handoff: on_link_lost callback failed")
        if failed:
            logger.info("handoff link %s: %d messages not delivered", link.dest, len(failed))
            self.stats.failed += len(failed)
        for _end, conid, token in failed:
            try:
                handler.on_gone(conid, token)
            except Exception:
                logger.exception("handoff: on_gone callback failed for %x", conid)

    # -- inside --------------------------------------------------------------------------------

    def _dispatch(self, link: Link, messages: list[Handoff]) -> None:
        self.stats.received += len(messages)
        handler = self._handler
        deliver = handler.deliver
        refusing = self.stop.given_up
        for msg in messages:
            # A failing callback costs its own message, not the link and the others on it.
            try:
                if msg.kind is _FRAME:
                    source = (id(link), msg.token)
                    refused = refusing and not msg.flags & _NOTICE
                    if refused or not deliver(link, msg.conid, msg.payload, msg.flags, source):
                        self.stats.gone_sent += 1
                        link.push_reply(_pack_header(_GONE, 0, 0, msg.conid, msg.token, 0))
                elif msg.kind is _GONE:
                    self.stats.gone_received += 1
                    handler.on_gone(msg.conid, msg.token)
                elif msg.kind is _CLOSE:
                    handler.close_conn(msg.conid)
                elif msg.kind is _PAUSE or msg.kind is _RESUME:
                    handler.on_flow(msg.kind is _PAUSE, msg.conid, msg.token, id(link))
                else:
                    handler.on_control(link, msg)
            except Exception:
                logger.exception("handoff: %s callback failed for %x", msg.kind.name, msg.conid)

    def _link(self, dest: Path) -> Link:
        link = self._links.get(dest)
        if link is None:
            if self._closed:
                raise RuntimeError("handoff hub is closed")
            link = self._links[dest] = Link(self, dest, self.loop, self.max_payload)
            link.task = self.loop.create_task(link.connect(self.loop, dest))
        return link

    async def _wait_lost(self, links: list[Link], timeout: float) -> None:
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
