"""Dialing: the outbound connections of one worker that are still connecting, kept bounded.

Rules (issue 12 item 3; rfc-checklist §2.4, §4.5):
- Frames relayed to a next hop that is still connecting wait in its connection (parked).
  When the connect fails, asyncio calls no connection_lost: everything the connection holds
  is let go here (the sources flow control paused resume, the parked bytes go), and each
  parked frame is a relay failure whose sender gets a failure REPORT (Status 000 408) when
  its SEND asked for one: the 200 has gone out (RFC 4976 §6.4.1). A forwarded AUTH, answered
  end to end, gets a 408 response instead (rfc-checklist §4.5 [impl]); other frames nothing.
- Bounds, from [msrp]: connects in flight per worker (max_connects) and per source
  connection (max_connects_per_conn), connects started per second per source connection
  (connect_rate, a token bucket: connects to closed ports fail within microseconds, so the
  in-flight bound alone let one client start tens of thousands a second), bytes parked per
  worker (max_connecting_bytes, each parked frame's record included). A next hop whose
  connect failed is remembered for connect_fail_ttl seconds, so frames for it fail at once
  instead of dialling it each time. The relay-wide rate ([limits] max_outbound_per_second)
  is asked last, so a connect another bound refuses takes none of its tokens.
- A frame refused by a bound or by a remembered failure fails the same way as a parked one:
  relay() takes it (a FailedSink), and its sender gets the REPORT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..config import DialSettings
from ..protocol import Frame
from ..shm import Counter, StatsCounters
from .outbox import Outbox
from .ports import Blockable, Lost, Sink
from .reports import loss_notice
from .sinks import LocalSink

__all__ = ["Dialing", "FailedSink"]

logger = logging.getLogger(__name__)

RECORD_COST = 256
"""Bytes a parked frame's record counts for against max_connecting_bytes."""
FAILED_MEMORY = 4096
"""Failed next hops remembered per worker at most (the oldest is forgotten first)."""
BUCKET_MEMORY = 4096
"""Sources whose connect rate is tracked per worker at most (the least recent goes first)."""
REPORT_CODE, REPORT_REASON = 408, "Request Timeout"  # rfc-checklist §4.5 [impl]


class Dialed(Protocol):
    """An outbound connection still connecting (conn.MsrpConnection)."""

    conid: int

    @property
    def out(self) -> Outbox: ...

    def connect_failed(self, reason: str) -> None: ...


class Origin(Blockable, Protocol):
    """The connection whose frame is being routed (conn.MsrpConnection)."""

    @property
    def conid(self) -> int: ...


class Notified(Protocol):
    def write_reply(self, data: bytes, close_after: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class _Parked:
    origin: int
    """The connection the frame came on."""
    notice: bytes | None
    """What its sender gets if the frame is lost: a REPORT, a 408 to an AUTH, or nothing."""
    lost: Lost | None = None
    """Called instead when the frame is a forwarded transaction's: it tells its sender."""


class FailedSink(Sink):
    """Where a frame goes that cannot be delivered: nowhere (its sender has its REPORT)."""

    __slots__ = ()

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        return True


_FAILED = FailedSink()


class Dialing:
    def __init__(
        self,
        m: DialSettings,
        counters: StatsCounters,
        conns: Mapping[int, Notified],
        loop: asyncio.AbstractEventLoop,
        connect_allowed: Callable[[], bool],
    ) -> None:
        self.counters = counters
        self.connect_allowed = connect_allowed
        """The relay-wide connect rate ([limits] max_outbound_per_second, limits.py)."""
        self.conns = conns
        """This worker's connections by id: a lost frame's sender is told there."""
        self.loop = loop
        self.fail_ttl = m.connect_fail_ttl
        self.max_connects = m.max_connects
        self.max_per_source = m.max_connects_per_conn
        self.max_bytes = m.max_connecting_bytes
        self.connecting: dict[Dialed, tuple[int | None, list[_Parked]]] = {}
        """conn -> (the source connection that started it, the frames parked on it)."""
        self.per_source: dict[int, int] = {}
        self.rate = m.connect_rate
        self.burst = max(1.0, self.rate)  # a rate under 1/s still allows one connect
        self.buckets: OrderedDict[int, tuple[float, float]] = OrderedDict()
        """source conid -> (connects it may still start, when that was counted); a source
        forgotten (the oldest past BUCKET_MEMORY) starts again from a full bucket."""
        self.failed: OrderedDict[str, float] = OrderedDict()
        """next hop key -> when (monotonic) its failure is forgotten."""

    def refusal(self, key: str, origin: int) -> str | None:
        """Why a new connect to `key`, for a frame from connection `origin`, may not start
        now, or None when it may."""
        until = self.failed.get(key)
        if until is not None:
            if time.monotonic() < until:
                return "its connect failed moments ago"
            del self.failed[key]
        if len(self.connecting) >= self.max_connects:
            return f"{self.max_connects} connects in flight in this worker"
        if self.per_source.get(origin, 0) >= self.max_per_source:
            return f"{self.max_per_source} connects in flight for its sender"
        if self._tokens(origin, time.monotonic()) < 1:
            return f"its sender started {self.rate:g} connects a second"
        over = self._over_bytes()
        if over is None and not self.connect_allowed():
            return "the relay's max_outbound_per_second"
        return over

    def _tokens(self, conid: int, now: float) -> float:
        tokens, at = self.buckets.get(conid, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def started(self, conn: Dialed, origin: int) -> None:
        """A connect for a frame from connection `origin` starts."""
        self.connecting[conn] = (origin, [])
        self.per_source[origin] = self.per_source.get(origin, 0) + 1
        now = time.monotonic()
        self.buckets[origin] = (self._tokens(origin, now) - 1, now)
        self.buckets.move_to_end(origin)
        while len(self.buckets) > BUCKET_MEMORY:
            self.buckets.popitem(last=False)
        self.counters.add(Counter.connects_out)

    def park(
        self,
        conn: Dialed,
        key: str,
        frame: Frame,
        origin: Origin,
        lost: Lost | None = None,
    ) -> Sink:
        """The sink for `frame` from `origin` to `conn`, still connecting (or a FailedSink
        when the bytes bound is reached). `lost`: how its loss is told, if not the usual way."""
        entry = self.connecting.get(conn)
        if entry is None:
            return LocalSink(conn.out, origin, conn.conid)
        over = self._over_bytes()
        if over is not None:
            return self.fail_now(key, over, frame, origin.conid, lost)
        entry[1].append(_Parked(origin.conid, _notice(frame, lost), lost))
        return LocalSink(conn.out, origin, conn.conid)

    def fail_now(
        self, key: str, why: str, frame: Frame, origin: int, lost: Lost | None = None
    ) -> Sink:
        """`frame`, from connection `origin`, for `key` fails now: counted, logged, reported
        to its sender."""
        self.counters.add(Counter.relay_fail)
        # Debug only: a client can make one per frame; relay_fail counts them.
        logger.debug("relay to %s failed: %s", key, why)
        self._report(_Parked(origin, _notice(frame, lost), lost))
        return _FAILED

    def connected(self, conn: Dialed) -> None:
        self._done(conn)

    def failed_connect(self, key: str, conn: Dialed, reason: str) -> None:
        """The connect to `key` failed: release what `conn` holds, remember the failure, and
        fail every frame parked on it."""
        parked = self._done(conn)
        conn.connect_failed(reason)
        self.failed[key] = time.monotonic() + self.fail_ttl
        self.failed.move_to_end(key)
        while len(self.failed) > FAILED_MEMORY:
            self.failed.popitem(last=False)
        self.counters.add(Counter.connects_failed)
        self.counters.add(Counter.relay_fail, max(1, len(parked)))
        logger.warning(
            "relay to %s failed: cannot connect: %s (%d frames lost)", key, reason, len(parked)
        )
        for record in parked:
            self._report(record)

    def _done(self, conn: Dialed) -> list[_Parked]:
        origin, parked = self.connecting.pop(conn, (None, []))
        if origin is not None:
            left = self.per_source.get(origin, 0) - 1
            if left > 0:
                self.per_source[origin] = left
            else:
                self.per_source.pop(origin, None)
        return parked

    def _over_bytes(self) -> str | None:
        waiting = sum(
            c.out.pending_bytes + c.out.gate.held_bytes + RECORD_COST * len(parked)
            for c, (_, parked) in self.connecting.items()
        )
        if waiting < self.max_bytes:
            return None
        return f"{waiting} bytes wait for connections in this worker"

    def _report(self, record: _Parked) -> None:
        """Tell the sender after the route's own 200: after this loop iteration, and behind
        the 200 of a streamed SEND still held until its end-line (write_reply). A forwarded
        transaction is told now (txrelay.py: it ends, so relay() sees it failed), through
        write_reply as well, after the 200 the route wrote before forwarding."""
        if record.lost is not None:
            record.lost(REPORT_CODE, REPORT_REASON)
            return
        origin = self.conns.get(record.origin)
        if record.notice is not None and origin is not None:
            self.loop.call_soon(origin.write_reply, record.notice)


def _notice(frame: Frame, lost: Lost | None) -> bytes | None:
    return None if lost is not None else loss_notice(frame, REPORT_CODE, REPORT_REASON)
