"""Loopback: a next hop that is this relay is routed again here, never over a connection to
ourselves; a path that loops through us is refused before any route runs.

Why (issue 12, item 9; RFC 4976 §6.2: a relay recognises its own URIs): when both ends AUTH
at this relay, To-Path `<R/sidA> <R/sidB> <bob>` makes relay() send to R/sidB, which is us.
Opening a TCP connection to ourselves cost a socket pair, a copy of every byte and a hop per
URI, and a To-Path naming us 450 times cost 450 frames.

Rules:
- relay() to a URI of ours (selfuri.py) parses the spliced frame and runs the route on it as
  if it had arrived on the same connection (`HopEnv`): e.g. the cmap route does its
  cmap_lookup on R/sidB and relays to Bob's connection. The sink that inner relay() chose is
  the outer relay()'s sink, so a streamed body's pieces go straight to the final destination.
- The inner hop's replies are not sent: a 2xx to a SEND is the hop-by-hop answer between two
  hops that are both us (RFC 4976 §6.4.1); any other reply to a SEND, or an inner relay()
  that fails, means the frame will not be delivered: it is logged, counted (relay_fail) and,
  when the route has already answered the sender 200, reported to it with a failure REPORT
  if it asked for one (RFC 4975 §7.1.2; ConnEnv.report_lost). A reply to another method (AUTH
  through our own URI) is relayed back on the connection the request came on, as the next
  hop's answer would have been.
- At most MAX_LOCAL_HOPS inner hops per frame; beyond that relay() fails (counted in
  loops_refused, reported like the above).
- A request whose To-Path names us more than MAX_SELF_IN_PATH times (a legitimate path holds
  at most an outbound and an inbound token of ours) is refused before the route runs, with
  403 (rfc-checklist §4.1: a well-formed request the relay will not forward by policy, as for
  a bare self-URI; not 400, since nothing in it is malformed). A REPORT or a request with
  Failure-Report: no gets no response (RFC 4975 §7.1.2, §7.1.4), a response is dropped; each
  is logged and counted.
"""

from __future__ import annotations

import logging
from typing import Final

from ..config.selfuri import SelfUris
from ..protocol import (
    Frame,
    FrameReader,
    LocalProtocolError,
    MsrpUri,
    ReaderLimits,
    relay_splice,
)
from ..protocol.frame import REPORT, SEND
from ..protocol.splice import Spliced
from ..protocol.writer import build_reply
from ..routing import Msrp, RouteScript
from ..routing.env import Destination
from ..routing.waits import NotYet, Unavailable
from ..shm import Counter, StatsCounters
from .connenv import ConnEnv, RoutedConn
from .counting import count_reply
from .ports import Sink

__all__ = ["MAX_LOCAL_HOPS", "MAX_SELF_IN_PATH", "HopEnv", "Loopback"]

logger = logging.getLogger("msrpd.route")

MAX_LOCAL_HOPS: Final = 2
"""Inner routing passes one frame may take: one is enough for <R/sidA> <R/sidB> <bob>; the
second leaves room for a route that rewrites paths (forward())."""
MAX_SELF_IN_PATH: Final = 2
"""Our URIs a legitimate To-Path can hold: the sender's token and the receiver's token."""
_HEAD_PAD = 96  # bytes after a streamed head so the reader sees "body over the limit"


class HopEnv(ConnEnv):
    """ConnEnv for an inner hop: replies are kept, not written (module docstring). What it
    relays is the `outer` frame's: its failures are reported to the outer frame's sender."""

    __slots__ = ("outer", "replies", "told")

    def __init__(self, env: ConnEnv, outer: Frame, depth: int) -> None:
        super().__init__(env.routes, env.conn, env.out, env.intake)
        if env.routes.finder is not None:
            self.asks = env.asking()
        self.depth = depth
        self.outer = outer
        self.replies: list[bytes] = []
        self.told = False
        """Its t_relay failed and the transaction layer told the sender (txrelay.py)."""

    def write_origin(self, data: bytes, flags: int, status: int = 0) -> None:
        self.replies.append(data)

    def user_ha1(self, username: str, realm: str) -> str | None:
        try:
            return super().user_ha1(username, realm)
        except NotYet:
            # The outer pass has relayed its frame already: it cannot be routed again
            # (routing/waits.py). The lookup goes on and fills the cache for a retry.
            raise Unavailable("user store") from None

    def node_of(self, sessid: str) -> MsrpUri | None:
        try:
            return super().node_of(sessid)
        except NotYet:
            # As for user_ha1: the outer pass cannot be routed again. This frame gets 481;
            # its lookup, if asked, goes on and fills the cache for the next one.
            if self.routes.finder is not None:
                self.routes.finder.cannot_wait(sessid)
            return None

    def relay(self, frame: Frame, data: bytes | Spliced, dest: Destination, flags: int) -> int:
        return super().relay(self.outer, data, dest, flags)

    def t_relay(
        self, frame: Frame, dest: Destination, flags: int, basis: Frame | None = None
    ) -> int:
        result = super().t_relay(frame, dest, flags, self.outer)
        self.told = self.told or result == -2
        return result


class Loopback:
    __slots__ = ("counters", "limits", "route", "self_uris")

    def __init__(
        self,
        route: RouteScript,
        limits: ReaderLimits,
        counters: StatsCounters,
        self_uris: SelfUris,
    ) -> None:
        self.route = route
        self.limits = limits
        self.counters = counters
        self.self_uris = self_uris

    def refuse_loop(self, frame: Frame, conn: RoutedConn) -> bool:
        """True when `frame`'s To-Path names us too often: it has been answered or dropped."""
        if frame.to_count <= MAX_SELF_IN_PATH:
            return False  # the usual frame: nothing to parse
        try:
            ours = self.self_uris.count(frame.to_path)
        except LocalProtocolError:
            return False  # the route answers a bad path
        if ours <= MAX_SELF_IN_PATH:
            return False
        self.counters.add(Counter.loops_refused)
        tid = frame.tid.decode(errors="replace")
        logger.warning(
            "refused %s from %s: To-Path names this relay %d times (loop)", tid, conn.peer_key, ours
        )
        if frame.method is not None and frame.method != REPORT and frame.failure_report != b"no":
            reply = build_reply(frame, 403, "Forbidden (To-Path loops through this relay)")
            count_reply(self.counters, reply)
            conn.write_reply(reply)  # a streamed frame's once its end-line is in
        return True

    def reroute(self, env: ConnEnv, outer: Frame, data: bytes, depth: int) -> Sink | None:
        """Route `data` (what relay() of `outer` would have sent to our own URI) here, as
        inner hop `depth`; the sink the inner route relayed to, or None when it did not relay
        (logged, counted, reported)."""
        if depth > MAX_LOCAL_HOPS:
            self.counters.add(Counter.loops_refused)
            logger.warning(
                "relay of %s refused: more than %d hops through this relay",
                _tid(outer),
                MAX_LOCAL_HOPS,
            )
            env.report_lost(outer, 403, "Forbidden (loops through this relay)")
            return None
        frame = _parse(data, outer.streamed, self.limits)
        if frame is None:
            logger.warning(
                "relay of %s to ourselves: the spliced frame does not parse", _tid(outer)
            )
            self.counters.add(Counter.relay_fail)
            env.report_lost(outer, 408, "Not Delivered")
            return None
        hop = HopEnv(env, outer, depth)
        try:
            self.route.event(Msrp(frame, env.conn.info, hop))
        except Unavailable as exc:
            logger.info("the inner hop of %s failed: %s", _tid(outer), exc)
        except Exception:
            logger.exception("route failed on the inner hop of %s", _tid(outer))
            self.counters.add(Counter.errors)
        refused = [self._inner_reply(reply, outer, env) for reply in hop.replies]
        if hop.last_sink is None and not any(refused) and not hop.told:
            env.report_lost(outer, 408, "Not Delivered")  # the inner relay() failed (logged there)
        return hop.last_sink

    def _inner_reply(self, data: bytes, outer: Frame, env: ConnEnv) -> bool:
        """Deal with one reply of the inner hop; True when it refused a SEND."""
        code = data.split(b" ", 3)[2:3]
        if outer.method == SEND:
            if code[:1] and code[0].startswith(b"2"):
                return False  # the hop-by-hop 200 between two hops that are both us
            self.counters.add(Counter.relay_fail)
            first_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            logger.warning(
                "relay of %s failed on its hop through this relay: %s", _tid(outer), first_line
            )
            status = int(code[0]) if code and code[0].isdigit() else 408
            env.report_lost(
                outer, status, "Session Does Not Exist" if status == 481 else "Not Delivered"
            )
            return True
        reply = _parse(data, False, self.limits)
        try:
            spliced = None if reply is None else relay_splice(reply)
        except LocalProtocolError:
            spliced = None
        if spliced is None:
            logger.info("reply of the inner hop of %s dropped: no hop back", _tid(outer))
        else:
            env.conn.write_reply(spliced)
        return False


def _parse(data: bytes, streamed: bool, limits: ReaderLimits) -> Frame | None:
    """`data` as a Frame: a whole frame, or the head of a streamed one."""
    if streamed:
        reader = FrameReader(ReaderLimits(max_head=limits.max_head, max_body=0))
        reader.receive_data(data + b"\0" * _HEAD_PAD)
    else:
        reader = FrameReader(limits)
        reader.receive_data(data)
    event = next(iter(reader.events()), None)
    return event if isinstance(event, Frame) else None


def _tid(frame: Frame) -> str:
    return frame.tid.decode(errors="replace")
