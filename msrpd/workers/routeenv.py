"""ConnEnv: the worker's implementation of the script API's RouteEnv, one per connection.

Rules: the script's reply() writes on the connection the frame came on (for a streamed frame
once its end-line is in, conn.write_reply); relay() asks the worker's delivery layer for a sink
(a local connection, another worker's, or a new outbound one) and remembers it, so that a
streamed frame's pieces follow its head.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from ..protocol.writer import build_failure_report, report_basis
from ..routing.env import Destination, RoutePolicy, SendFlags
from ..routing.sht import ScriptHTable
from ..shm import Cmap, Counter

if TYPE_CHECKING:
    from .conn import MsrpConnection
    from .context import WorkerContext
    from .sinks import Sink

__all__ = ["ConnEnv"]

logger = logging.getLogger("msrpd.route")

# 96 bits from the CSPRNG: unguessable session ids (RFC 4976 §6.3, checklist case 15).
_SESSION_BYTES = 12


class ConnEnv:
    __slots__ = ("acked", "conn", "ctx", "last_sink")

    def __init__(self, ctx: WorkerContext, conn: MsrpConnection) -> None:
        self.ctx = ctx
        self.conn = conn
        self.last_sink: Sink | None = None
        self.acked = -1
        """conn.frames_in when the route last answered 2xx: which frame it was (report_lost);
        a count, not the frame, so no frame outlives its routing."""

    @property
    def policy(self) -> RoutePolicy:
        return self.ctx.policy

    @property
    def cmap(self) -> Cmap | None:
        return self.ctx.cmap

    @property
    def nonce_secret(self) -> bytes:
        return self.ctx.nonce_secret

    def now(self) -> float:
        return time.time()

    def nonce_salt(self) -> bytes:
        return secrets.token_bytes(4)

    def new_session_id(self) -> str:
        return secrets.token_urlsafe(_SESSION_BYTES)

    @property
    def htable(self) -> ScriptHTable:
        return self.ctx.htable

    @property
    def has_user_store(self) -> bool:
        return self.ctx.users is not None

    def user_ha1(self, username: str, realm: str) -> str | None:
        return self.ctx.user_ha1(username, realm)

    def write_origin(self, data: bytes, flags: int) -> None:
        self.ctx.count_reply(data)
        if data[data.index(b" ", 5) + 1 :].startswith(b"2"):
            self.acked = self.conn.frames_in
        self.conn.write_reply(data, bool(flags & SendFlags.CLOSE_AFTER))

    def report_lost(self, code: int, reason: str) -> None:
        """The frame being routed will not be delivered: if the route has already answered
        it 2xx, its sender gets a failure REPORT when it asked for one (RFC 4976 §6.4.1,
        rfc-checklist §2.4); otherwise the route's own answer tells it."""
        frame = self.ctx.current_frame
        if frame is None or self.acked != self.conn.frames_in:
            return
        basis = report_basis(frame)
        if basis is not None:
            tid = secrets.token_hex(6).encode()
            self.conn.write_reply(build_failure_report(basis, tid, code, reason))

    def relay(self, data: bytes, dest: Destination, flags: int) -> int:
        loopback, uri = self.ctx.loopback, dest.uri
        if loopback is not None and uri is not None and loopback.self_uris.matches(uri):
            # The next hop is us: route it again here, no connection (loopback.py).
            sink = loopback.reroute(self, data, self.ctx.current_streamed)
            self.last_sink = sink
            return -1 if sink is None else 1
        delivery = self.ctx.delivery
        sink = None if delivery is None else delivery.resolve(dest, flags)
        if sink is None:
            frame = self.ctx.current_frame
            if frame is not None and frame.method is None:
                # A response for a frame we forwarded (its To-Path names more hops): it goes
                # back only on a connection the relay opened; a client's is not found by
                # address (issue 12), and the SEND got our hop-by-hop 200 (RFC 4976 §6.4.1).
                self.ctx.counters.add(Counter.responses_dropped)
                logger.info("response %s dropped: no connection to %s", self._tid(), dest.uri)
                return -1
            self.ctx.count_relay_fail()
            logger.info(
                "relay of %s failed: no way to %s", self._tid(), dest.uri or f"{dest.conid:x}"
            )
            self.report_lost(408 if dest.conid is None else 481, "Not Delivered")
            return -1
        streamed = self.ctx.current_streamed
        close_after = bool(flags & SendFlags.CLOSE_AFTER) and not streamed
        if not sink.send(data, source=self.conn.conid, more=streamed, close_after=close_after):
            self.ctx.count_relay_fail()
            logger.info("relay of %s failed: the destination connection is closed", self._tid())
            self.report_lost(481, "Session Does Not Exist")
            return -1
        self.ctx.count_frame_out()
        self.last_sink = sink
        return 1

    def auth_done(self, ok: bool) -> None:
        self.ctx.counters.add(Counter.auth_ok if ok else Counter.auth_fail)

    def _tid(self) -> str:
        frame = self.ctx.current_frame
        return "a frame" if frame is None else frame.tid.decode(errors="replace")

    def session_saved(self, sessid: str, user: str = "") -> None:
        self.conn.sessions.append(sessid)
        self.conn.session_meta[sessid] = (user, time.time())
