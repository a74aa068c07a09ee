"""WorkerContext: everything one worker's connections share, passed in, never global.

Rules (style rule "no mutable globals"): the worker builds one context after fork; every
connection and the script API reach the config, shared memory, handoff links and counters
through it, as uvicorn passes ServerState into each protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..protocol import (
    Frame,
    FrameReader,
    ReaderLimits,
    RemoteProtocolError,
    Status,
    build_reply,
)
from ..protocol.grammar import DASHES
from ..protocol.writer import ReportBasis, build_failure_report, report_basis
from ..routing import Msrp, RoutePolicy, RouteScript
from ..routing.sht import ScriptHTable
from ..routing.sip import SipRequest
from ..routing.users import UserStore
from ..rundir import handoff_path
from ..shm import Cmap, Counter, Registry, ShmSet, StatsCounters
from .accounting import account
from .conids import FIRST_SERIAL, SerialBlocks
from .flow import WRITE_HIGH, Blockable
from .handoff import HandoffFlags, HandoffKind, make_conid
from .remoteflow import RemoteFlow

if TYPE_CHECKING:
    from .conn import MsrpConnection
    from .delivery import Delivery
    from .links import HandoffHub
    from .loopback import Loopback
    from .migrate.balance import AcceptBalancer
    from .migrate.colocate import Mover
    from .sentlog import Unsent
    from .sinks import Sink

__all__ = ["WorkerContext", "WorkerIdentity"]

logger = logging.getLogger("msrpd.route")

# A relayed head is looked for in this many first bytes (max_head is 16 KiB by default).
RELAYED_HEAD_MAX = 64 * 1024
# GONE answers come back within milliseconds, except at a stop, when a peer refuses what it
# still holds for slow receivers. Flow control bounds that by bytes (about 3 MiB per
# destination: our link, the peer's connection buffer and transport), not by frames: a
# record is kept for each handoff until the records kept weigh SENT_MEMORY bytes, so the
# oldest goes only once a frame at least as large went out after it. A record weighs its
# head copy plus SENT_OVERHEAD (the record, its key and its slot in the dict).
SENT_MEMORY = 64 << 20
SENT_OVERHEAD = 200
FORWARD_MEMORY = 1 << 18
# Connections that moved away, remembered so that a frame they sent before the move can
# still be reported to them (handoff_gone); one move per connection, so recent ones do.
MOVED_MEMORY = 1 << 16
STOP_REASON = "Relay Stopping"

_REPLY_COUNTERS = {ord("2"): Counter.replies_2xx, ord("4"): Counter.replies_4xx}
_METHOD_COUNTERS = {
    b"SEND": Counter.frames_in_send,
    b"REPORT": Counter.frames_in_report,
    b"AUTH": Counter.frames_in_auth,
}


@dataclass(frozen=True, slots=True)
class _Sent:
    tid: bytes
    peer: str
    origin: int
    """The connection the frame came on (ours: we routed it)."""
    head: bytes | None
    """The SEND's first line and headers, to build a failure REPORT from; None otherwise."""


def _basis_from_head(head: bytes | None, tid: bytes) -> ReportBasis | None:
    frame = _parse_head(head, tid)
    return None if frame is None else report_basis(frame)


def _parse_head(head: bytes | None, tid: bytes) -> Frame | None:
    if head is None:
        return None
    reader = FrameReader()
    reader.receive_data(head + b"\r\n" + DASHES + tid + b"$\r\n")
    try:
        return next((e for e in reader.events() if isinstance(e, Frame)), None)
    except RemoteProtocolError:  # not a frame: nothing to report
        return None


def _relayed_basis(data: bytes | memoryview) -> ReportBasis | None:
    """The basis of a failure REPORT for a frame as this relay wrote it to the next hop: its
    From-Path starts with our own URI (RFC 4976 §6.2 splice), and the sender's path follows."""
    buf = bytes(data[:RELAYED_HEAD_MAX])
    ends = [at for at in (buf.find(b"\r\n\r\n"), buf.find(b"\r\n" + DASHES)) if at >= 0]
    first = buf.split(b"\r\n", 1)[0].split(b" ")
    if not ends or len(first) != 3 or first[2] != b"SEND":
        return None
    frame = _parse_head(buf[: min(ends) + 2], first[1])
    basis = None if frame is None else report_basis(frame)
    uris = [] if frame is None else frame.from_path_raw.split()
    if basis is None or len(uris) < 2:
        return None
    return ReportBasis(b" ".join(uris[1:]), uris[0], basis.message_id, basis.byte_range)


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    slot: int
    """Worker slot 0..children-1 (its listening sockets)."""
    generation: int
    """Reload generation; a connection id names slot and generation (DESIGN §2)."""
    index: int
    """Process slot in the heartbeat and stats tables."""
    first_serial: int = FIRST_SERIAL
    """Its first connection-id serial: above every one a dead predecessor of the same
    (slot, generation) may have used (conids.py)."""


@dataclass(slots=True, eq=False)
class WorkerContext:
    settings: Settings
    ident: WorkerIdentity
    shm: ShmSet
    route: RouteScript
    policy: RoutePolicy
    nonce_secret: bytes
    loop: asyncio.AbstractEventLoop
    users: UserStore | None = None
    hub: HandoffHub | None = None
    balancer: AcceptBalancer | None = None
    mover: Mover[MsrpConnection] | None = None
    delivery: Delivery | None = None
    loopback: Loopback | None = None
    """Our own URIs, and routing a frame again when its next hop is us (loopback.py)."""
    conns: dict[int, MsrpConnection] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    counters: StatsCounters = field(default_factory=StatsCounters)
    dirty: list[MsrpConnection] = field(default_factory=list)
    batching: bool = False
    """Inside one read's work (begin_batch .. flush_now)."""
    last_delivery: float = 0.0
    """When a handoff last brought a frame (monotonic): graceful stop waits for quiet."""
    stopping: bool = False
    """Graceful stop (SIGTERM): connections read no new frame (conn.py)."""
    given_up: bool = False
    """The stop's deadline is near: what is still unsent was reported, nothing more is read or
    taken from other workers (stopping.py)."""
    current_streamed: bool = False
    current_source: Blockable | None = None
    """The connection whose frames are being routed now (flow.py pauses it)."""
    current_frame: Frame | None = None
    current_conn: MsrpConnection | None = None
    remote_flow: RemoteFlow = field(default_factory=RemoteFlow)
    """Connections of other workers that asked for a pause (PAUSE/RESUME)."""
    sent: OrderedDict[int, _Sent] = field(default_factory=OrderedDict)
    """token -> what was handed off recently, so a GONE names the frame and can report it."""
    sent_weight: int = 0
    """What `sent` weighs (SENT_MEMORY)."""
    forwarded: OrderedDict[int, tuple[int, int]] = field(default_factory=OrderedDict)
    """token -> (link id, token) a frame forwarded to a moved connection came with."""
    moved: OrderedDict[int, tuple[Path, int]] = field(default_factory=OrderedDict)
    """Old connection id -> (its new worker's handoff path, its new id) (handover.py)."""
    _paths: dict[tuple[int, int], Path] = field(default_factory=dict)
    _limits: ReaderLimits | None = None  # built once, on first use (every connection)
    _htable: ScriptHTable | None = None  # built once, on first use (htable scripts)
    _serials: SerialBlocks | None = None  # built on first use (conids.py)
    _tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def limits(self) -> ReaderLimits:
        if self._limits is None:
            m = self.settings.msrp
            self._limits = ReaderLimits(max_head=m.max_head, max_body=m.max_body)
        return self._limits

    @property
    def cmap(self) -> Cmap | None:
        return self.shm.cmap

    @property
    def htable(self) -> ScriptHTable:
        if self._htable is None:
            self._htable = ScriptHTable(self.shm.htable, time.time)
        return self._htable

    @property
    def registry(self) -> Registry | None:
        return self.shm.registry

    def queue_flush(self, conn: MsrpConnection) -> None:
        """Flush `conn` when this read's work ends (flush_now) or, outside a read, at the end
        of this loop iteration: one write per connection per batch (DESIGN §3, issue 7)."""
        self.dirty.append(conn)
        if len(self.dirty) == 1 and not self.batching:
            self.loop.call_soon(self.flush_dirty)

    def flush_dirty(self) -> None:
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, []
        # Last written, first flushed: a read's frames go to the far end before the 200s to
        # the sender (the route answers, then relays), so the relayed frame waits for no
        # other write (latency, issue 7). Order within one connection is untouched.
        for conn in reversed(dirty):
            conn.flush()

    def begin_batch(self) -> None:
        """One read's work starts: writes queue until flush_now, with no loop callback
        scheduled for them (flush_now must follow, in a finally)."""
        self.batching = True
        if self.hub is not None:
            self.hub.batching = True

    def flush_now(self) -> None:
        """The end of one read's work: write what it produced now, not at the end of the
        iteration after every other ready socket's work (latency, issue 7); one read's
        frames still leave in one write per destination."""
        self.batching = False
        self.flush_dirty()
        if self.hub is not None:
            self.hub.flush()

    def new_conid(self) -> int:
        """A connection id never used before by this (slot, generation), even by a worker
        that held it and died (conids.py)."""
        serials = self._serials
        if serials is None:
            ident, heartbeats = self.ident, self.shm.heartbeats
            serials = self._serials = SerialBlocks(
                ident.first_serial, lambda mark: heartbeats.reserve_serials(ident.index, mark)
            )
        return make_conid(self.ident.slot, self.ident.generation, serials.take())

    def next_token(self) -> int:
        token = next(self._tokens) & 0xFFFFFFFF
        frame, conn = self.current_frame, self.current_conn
        if frame is not None and conn is not None:
            # Only the head of a SEND is kept (a copy of ~200 bytes); it is parsed if a GONE
            # ever comes back, not on the hot path.
            head = bytes(frame.buf[: frame.hdr_end]) if frame.method == b"SEND" else None
            sent = self.sent
            sent[token] = _Sent(frame.tid, conn.peer_key, conn.conid, head)
            self.sent_weight += SENT_OVERHEAD + (0 if head is None else len(head))
            # Never forgotten during a stop: it reads no new frame, so nothing grows here.
            while self.sent_weight > SENT_MEMORY and not self.stopping:
                _, old = sent.popitem(last=False)
                self.sent_weight -= len(old.head or b"") + SENT_OVERHEAD
        return token

    def note_forward(self, token: int, source: object) -> None:
        """`token` carries a frame that came over a handoff link, `source` = (link id, its
        token), on to a connection that moved (handover.py)."""
        if isinstance(source, tuple) and len(source) == 2:
            self.forwarded[token] = source
            if len(self.forwarded) > FORWARD_MEMORY and not self.stopping:
                self.forwarded.popitem(last=False)

    def note_moved(self, old: int, path: Path, new: int) -> None:
        """Connection `old` is `new` on the worker listening on `path` now (handover.py)."""
        self.moved[old] = (path, new)
        if len(self.moved) > MOVED_MEMORY:
            self.moved.popitem(last=False)

    def throttle_handoff(self, path: Path, conid: int | None = None, token: int = 0) -> None:
        """After a handoff to `conid`: pause the connection being routed while its owner has
        asked for a pause (remoteflow.py), or while the link holds more than WRITE_HIGH,
        until the link drains (flow.py)."""
        source, hub = self.current_source, self.hub
        if conid is not None:
            self.remote_flow.throttle(conid, token, source)
        if source is None or hub is None or hub.pending_bytes(path) <= WRITE_HIGH:
            return
        source.block(path)
        hub.when_drained(path, lambda: source.unblock(path))

    def handoff_gone(self, conid: int, token: int) -> None:
        """The owner of `conid` says it is gone: the frame is lost. Say which, and tell the
        sender with a REPORT when its SEND asked for failure reports (issue 4, RFC 4975
        §7.1.2: the 200 has already gone out)."""
        self.counters.add(Counter.handoff_gone)
        self.counters.add(Counter.relay_fail)
        sent = self.sent.pop(token, None)
        if sent is not None:
            self.sent_weight -= len(sent.head or b"") + SENT_OVERHEAD
        upstream = None if sent is not None else self.forwarded.pop(token, None)
        if upstream is not None and self.hub is not None:
            self.hub.refuse(upstream, conid)  # forwarded here: its sender's worker reports
            return
        if sent is None:
            logger.warning("relay failed: a frame for connection %x was not delivered", conid)
            return
        tid = sent.tid.decode(errors="replace")
        log = logger.debug if self.stopping else logger.warning  # the owner logged a summary
        log("relay failed: %s from %s not delivered, connection %x is gone", tid, sent.peer, conid)
        basis = _basis_from_head(sent.head, sent.tid)
        if basis is None:
            return
        new_tid = secrets.token_hex(6).encode()
        # A GONE during a stop: the owner gave up on it (report_unsent), 408.
        code, reason = (408, STOP_REASON) if self.stopping else (481, "Session Does Not Exist")
        if not self._report_to(sent.origin, build_failure_report(basis, new_tid, code, reason)):
            logger.warning("relay failed: %s from %s not delivered, not reported", tid, sent.peer)

    def _report_to(self, conid: int, report: bytes) -> bool:
        """Write a failure REPORT to the sender's connection `conid`, here or, when it moved
        to another worker since (colocate.py), there; False when it is gone."""
        origin = self.conns.get(conid)
        if origin is not None and origin.write_frame(report):
            return True
        # Moving now (its new id may not be known yet: queued until MOVED), or moved before.
        if self.mover is not None and self.mover.deliver(conid, report, HandoffFlags.NOTICE, None):
            return True
        moved = self.moved.get(conid)
        if moved is None or self.hub is None:
            return False
        self.hub.send(moved[0], moved[1], 0, [report], HandoffFlags.NOTICE)
        return True

    def report_unsent(self, dest: MsrpConnection, unsent: list[Unsent]) -> None:
        """Relayed frames `dest` will never get (the stop gave up on them): each sender hears
        of it, with a failure REPORT when its SEND asked for one (RFC 4975 §7.1.2). A frame
        from another worker is refused to it (GONE), and that worker reports (handoff_gone)."""
        reported = refused = 0
        why: dict[str, int] = {}
        for source, head in unsent:
            self.counters.add(Counter.relay_fail)
            if isinstance(source, tuple):
                if self.hub is not None:
                    self.hub.refuse(source, dest.conid)
                    refused += 1
                continue
            basis = _relayed_basis(head)
            if basis is None or not isinstance(source, int):
                why["not a SEND"] = why.get("not a SEND", 0) + 1
                continue
            new_tid = secrets.token_hex(6).encode()
            if self._report_to(source, build_failure_report(basis, new_tid, 408, STOP_REASON)):
                reported += 1
            else:
                why["sender gone"] = why.get("sender gone", 0) + 1
        logger.warning(
            "stop: %d frames for %s not delivered, %d reported here, %d to other workers%s",
            len(unsent),
            dest.peer_key,
            reported,
            refused,
            "".join(f", {n} {what}" for what, n in why.items()),
        )

    def handoff_path(self, slot: int, generation: int) -> Path:
        key = (slot, generation)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = handoff_path(self.settings.core.run_dir, slot, generation)
        return path

    def hub_control(
        self,
        worker: tuple[int, int],
        kind: HandoffKind,
        conid: int,
        token: int = 0,
        payload: bytes = b"",
    ) -> None:
        """Send a connection-moving message to worker (slot, generation) (handover.py)."""
        if self.hub is not None:
            self.hub.send_control(self.handoff_path(*worker), kind, conid, token, payload)

    def serve_socket(self, conn: MsrpConnection, sock: socket.socket) -> None:
        """Serve an accepted socket another worker passed here with `conn`."""

        async def serve() -> None:
            try:
                await self.loop.connect_accepted_socket(lambda: conn, sock)
            except OSError as exc:
                logger.warning("cannot serve a passed connection: %s", exc)
                sock.close()

        task = self.loop.create_task(serve())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def user_ha1(self, username: str, realm: str) -> str | None:
        return None if self.users is None else self.users.get_ha1(username, realm)

    # -- connections ------------------------------------------------------------------------

    def connection_opened(self, conn: MsrpConnection) -> None:
        self.conns[conn.conid] = conn
        self.shm.heartbeats.set_conns(self.ident.index, len(self.conns))
        if self.registry is not None and conn.listed:
            self.registry.register(conn.registry_key, conn.conid)
        if not conn.migration.moves:  # a connection moved here was counted where it was accepted
            self.counters.add(Counter.conns_total)

    def connection_closed(self, conn: MsrpConnection) -> None:
        self.conns.pop(conn.conid, None)
        self.shm.heartbeats.set_conns(self.ident.index, len(self.conns))
        if self.registry is not None and conn.peer_key:
            self.registry.unregister(conn.registry_key, conn.conid)
        # A closed connection's sessions go with it (RFC 4976 §6.3).
        cmap = self.cmap
        if cmap is not None:
            for sessid in conn.sessions:
                cmap.delete(sessid)
        if self.settings.log.accounting:
            account(conn)
        if self.delivery is not None:
            self.delivery.forget(conn)

    # -- routing ----------------------------------------------------------------------------

    def run_route(self, frame: Frame, conn: MsrpConnection) -> Sink | None:
        """Run the script's event callback on `frame`; the sink relay() used, if any."""
        env = conn.env
        env.last_sink = None
        self.current_streamed = frame.streamed
        self.current_frame, self.current_conn = frame, conn
        try:
            self.route.event(Msrp(frame, conn.info, env))
        except Exception:
            # A script bug must not take the worker down: log with the tid, answer 500 to a
            # request, drop a response (issue 5; Kamailio drops silently).
            logger.exception("route failed on frame %s from %s", frame.tid.decode(), conn.peer_key)
            self.counters.add(Counter.errors)
            if frame.method is not None and frame.method != b"REPORT":
                reply = build_reply(frame, Status.SERVER_ERROR, "Server Error (route failed)")
                conn.write_reply(reply)
        finally:
            self.current_frame = self.current_conn = None
        return env.last_sink

    def run_sip_route(self, sip: SipRequest) -> None:
        """The script's request_route(sip), or the default stateless 403 No SIP Here."""
        handler = self.route.sip
        if handler is None:
            sip.reply(403, "No SIP Here")
            return
        try:
            handler(sip)
        except Exception:
            logger.exception("request_route failed on %r", sip.first_line)
            self.counters.add(Counter.errors)
            sip.reply(500, "Server Error")

    # -- counters ---------------------------------------------------------------------------

    def count_frame_in(self, frame: Frame) -> None:
        if frame.method is None:
            self.counters.add(Counter.frames_in_response)
        else:
            self.counters.add(_METHOD_COUNTERS.get(frame.method, Counter.frames_in_other))

    def count_frame_out(self) -> None:
        self.counters.add(Counter.frames_out)

    def count_reply(self, data: bytes) -> None:
        space = data.index(b" ", 5)
        counter = _REPLY_COUNTERS.get(data[space + 1], Counter.replies_5xx)
        self.counters.add(counter)

    def count_handoff_in(self) -> None:
        self.counters.add(Counter.handoffs_in)

    def count_relay_fail(self) -> None:
        self.counters.add(Counter.relay_fail)

    def count_invalid(self) -> None:
        self.counters.add(Counter.invalid_frames)

    def count_error(self) -> None:
        self.counters.add(Counter.errors)
