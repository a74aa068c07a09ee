"""The GONE -> REPORT memory: what was handed off, so that a GONE can name the frame lost and
its sender can be told.

Rules (issue 4, RFC 4975 §7.1.2): a frame handed to another worker (handoff.py) was already
answered 200; if that worker answers GONE (the connection is gone, or its stop gave up), the
sender gets a failure REPORT when its SEND asked for one. So each handoff token is remembered
with the frame's tid, sender, head and the worker it went to (SentMemory) for as long as that
worker may still answer GONE: until its frame has passed to a kernel there. Nothing per frame
says so; instead, once the records weigh [core] handoff_memory (64 MiB by default), each
worker holding some is asked which of ours it still holds (HELD, after every frame sent before
it on the same link, so the answer covers them), and the records of frames sent to it before
the question and not in its answer (HOLDING, held.py) go. A receiver stalled while others
flow keeps its records however many frames pass after them. Another question comes only
after a quarter of the limit more; past HARD_CAP times the limit (peers hold that much, or
do not answer) the oldest are forgotten, counted and logged, so memory stays bounded. None
goes during a stop (it reads no new frame, so nothing grows here).
"""

from __future__ import annotations

import itertools
import logging
import struct
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..protocol import Frame
from ..shm import Counter, StatsCounters
from .handoff import HandoffFlags
from .links import HandoffHub
from .ports import Lost, Writable
from .reports import head_report, relayed_report
from .sentlog import Unsent
from .stopstate import StopState

__all__ = ["GoneReports", "Sent", "SentMemory"]

logger = logging.getLogger("msrpd.route")

SENT_MEMORY = 64 << 20
HARD_CAP = 4
"""Records may weigh HARD_CAP times the limit while peers still hold their frames (or do not
answer); past that the oldest are forgotten, counted and logged."""
STALE_ROUNDS = 4
"""A question unanswered for this many rounds is forgotten (its link broke): asked again."""
_MASK = 0xFFFFFFFF
SENT_OVERHEAD = 200
"""What a record weighs besides its head copy: the record, its key and its slot."""
FORWARD_MEMORY = 1 << 18
MOVED_MEMORY = 1 << 16
"""Connections that moved away, remembered so that a frame they sent before the move can
still be reported to them; one move per connection, so recent ones do."""
STOP_REASON = "Relay Stopping"


@dataclass(frozen=True, slots=True)
class Sent:
    tid: bytes
    peer: str
    origin: int
    """The connection the frame came on (ours: we routed it)."""
    head: bytes | None
    """The SEND's first line and headers, to build a failure REPORT from; None otherwise."""
    lost: Lost | None = None
    """A forwarded transaction's (txrelay.py): it tells its sender itself."""
    dest: Path | None = None
    """The handoff path of the worker it went to (None: through a move, handover.py)."""

    @classmethod
    def of(
        cls,
        frame: Frame,
        origin: int,
        peer: str,
        lost: Lost | None = None,
        dest: Path | None = None,
    ) -> Sent:
        # Only the head of a SEND is kept (a copy of ~200 bytes); it is parsed if a GONE
        # ever comes back, not on the hot path.
        if lost is not None:
            return cls(frame.tid, peer, origin, None, lost, dest)
        head = bytes(frame.buf[: frame.hdr_end]) if frame.method == b"SEND" else None
        return cls(frame.tid, peer, origin, head, None, dest)


class SentMemory:
    """Handoff tokens, and what each carried (bounded as the module docstring says)."""

    __slots__ = (
        "ask",
        "asked",
        "evicted",
        "forwarded",
        "issued",
        "limit",
        "moved",
        "questions",
        "rounds",
        "sent",
        "stop",
        "threshold",
        "weight",
    )

    def __init__(self, stop: StopState, limit: int = SENT_MEMORY) -> None:
        self.stop = stop
        self.limit = limit
        """What `sent` should weigh at most ([core] handoff_memory)."""
        self.issued = 0
        """Tokens issued so far (a token is this count's low 32 bits)."""
        self.sent: OrderedDict[int, Sent] = OrderedDict()
        self.weight = 0
        """What `sent` weighs."""
        self.threshold = limit
        """The weight past which peers are asked what they still hold (HELD)."""
        self.ask: Callable[[Path, int], None] | None = None
        """Sends HELD with a question number to a peer (handoffout.py wires it)."""
        self.asked: dict[int, tuple[Path, int, int]] = {}
        """Question -> (the peer asked, `issued` then, the round it was asked in)."""
        self.questions = itertools.count(1)
        self.rounds = itertools.count()
        self.evicted = 0
        """Records forgotten at the hard cap: a GONE for their frames is not reported."""
        self.forwarded: OrderedDict[int, tuple[int, int]] = OrderedDict()
        """token -> (link id, token) a frame forwarded to a moved connection came with."""
        self.moved: OrderedDict[int, tuple[Path, int]] = OrderedDict()
        """Old connection id -> (its new worker's handoff path, its new id) (handover.py)."""

    def new_token(self, record: Sent | None = None) -> int:
        """A token for a handoff; `record` is the routed frame it carries, if any."""
        self.issued += 1
        token = self.issued & _MASK
        if record is not None:
            self.sent[token] = record
            self.weight += SENT_OVERHEAD + (0 if record.head is None else len(record.head))
            if self.weight > self.threshold and not self.stop.stopping:
                self._over()
        return token

    def _over(self) -> None:
        """Past the threshold: ask each peer holding records which of our frames it still
        holds (HELD, answered in order after every frame sent before it); `holding` drops
        the rest. Past the hard cap (peers hold that much, or do not answer), forget the
        oldest, counted and logged: memory stays bounded."""
        sent, cap = self.sent, self.limit * HARD_CAP
        if self.weight > cap:
            evicted, floor = 0, cap - self.limit // 4  # room for a round: no eviction per frame
            while self.weight > floor:
                _, old = sent.popitem(last=False)
                self.weight -= len(old.head or b"") + SENT_OVERHEAD
                evicted += 1
            self.evicted += evicted
            logger.warning(
                "handoff memory over %d bytes: %d relayed frames forgotten (%d in all): "
                "a GONE for them will not be reported",
                cap,
                evicted,
                self.evicted,
            )
        self.threshold = min(self.weight + self.limit // 4, cap)  # no question per frame
        ask = self.ask
        if ask is None:
            return
        now = next(self.rounds)
        asked = self.asked
        for question in [q for q, (_, _, r) in asked.items() if now - r >= STALE_ROUNDS]:
            del asked[question]
        waiting = {path for path, _, _ in asked.values()}
        # The frame whose token was issued last goes out after the question (sinks.py).
        before = self.issued - 1
        for path in {record.dest for record in sent.values()} - waiting:
            if path is not None:
                question = next(self.questions) & _MASK
                asked[question] = (path, before, now)
                ask(path, question)

    def holding(self, question: int, payload: bytes) -> None:
        """A peer's answer to HELD `question`: the tokens of the frames it still holds. Every
        record of a frame sent to it before the question and not among them goes: the frame
        reached a kernel, or its GONE came before this answer. Records of frames sent
        through a move (no peer known) go too once older than the question: a move forwards
        within milliseconds."""
        asked = self.asked.pop(question, None)
        if asked is None:
            return  # forgotten as stale: a later question does it
        path, then, _ = asked
        held = set(struct.unpack(f"!{len(payload) // 4}I", payload))
        newer, now = self.issued - then, self.issued & _MASK
        gone = [
            token
            for token, record in self.sent.items()
            if (record.dest is None or record.dest == path)
            and (now - token) & _MASK >= newer
            and token not in held
        ]
        for token in gone:
            self.take(token)
        if not self.asked:
            quarter = self.weight + self.limit // 4
            self.threshold = min(max(self.limit, quarter), self.limit * HARD_CAP)

    def note_forward(self, token: int, source: object) -> None:
        """`token` carries a frame that came over a handoff link, `source` = (link id, its
        token), on to a connection that moved (handover.py)."""
        if isinstance(source, tuple) and len(source) == 2:
            self.forwarded[token] = source
            if len(self.forwarded) > FORWARD_MEMORY and not self.stop.stopping:
                self.forwarded.popitem(last=False)

    def note_moved(self, old: int, path: Path, new: int) -> None:
        """Connection `old` is `new` on the worker listening on `path` now (handover.py)."""
        self.moved[old] = (path, new)
        if len(self.moved) > MOVED_MEMORY:
            self.moved.popitem(last=False)

    def take(self, token: int) -> Sent | None:
        sent = self.sent.pop(token, None)
        if sent is not None:
            self.weight -= len(sent.head or b"") + SENT_OVERHEAD
        return sent


class MovedDelivery(Protocol):
    """Frames for a connection moving away now (colocate.Mover)."""

    def deliver(
        self, conid: int, data: bytes | memoryview, flags: int, source: Hashable
    ) -> bool: ...


class Named(Protocol):
    @property
    def conid(self) -> int: ...

    @property
    def peer_key(self) -> str: ...


class _Conn(Protocol):
    """A connection of this worker: its outbox."""

    @property
    def out(self) -> Writable: ...


class Resources(Protocol):
    """What the reports need of the worker's shared resources (context.WorkerContext): read
    when a frame is lost, since the connection mover is built after the context."""

    @property
    def conns(self) -> Mapping[int, _Conn]: ...

    @property
    def hub(self) -> HandoffHub | None: ...

    @property
    def mover(self) -> MovedDelivery | None: ...

    @property
    def counters(self) -> StatsCounters: ...

    @property
    def stop(self) -> StopState: ...


class GoneReports:
    """Turns lost frames into failure REPORTs to their senders, wherever those are now."""

    __slots__ = ("memory", "res")

    def __init__(self, memory: SentMemory, res: Resources) -> None:
        self.memory = memory
        self.res = res

    def handoff_gone(self, conid: int, token: int) -> None:
        """The owner of `conid` says it is gone: the frame is lost. Say which, and tell the
        sender with a REPORT when its SEND asked for failure reports (issue 4, RFC 4975
        §7.1.2: the 200 has already gone out)."""
        res = self.res
        res.counters.add(Counter.handoff_gone)
        res.counters.add(Counter.relay_fail)
        sent = self.memory.take(token)
        upstream = None if sent is not None else self.memory.forwarded.pop(token, None)
        hub = res.hub
        if upstream is not None and hub is not None:
            hub.refuse(upstream, conid)  # forwarded here: its sender's worker reports
            return
        if sent is None:
            logger.warning("relay failed: a frame for connection %x was not delivered", conid)
            return
        tid = sent.tid.decode(errors="replace")
        stopping = res.stop.stopping
        if not stopping:
            # During a stop the owner logged a line per connection it gave up on
            # (report_unsent): one per frame here, tens of thousands, would eat the give-up's
            # margin at debug level.
            logger.warning(
                "relay failed: %s from %s not delivered, connection %x is gone",
                tid,
                sent.peer,
                conid,
            )
        # A GONE during a stop: the owner gave up on it (report_unsent), 408.
        code, reason = (408, STOP_REASON) if stopping else (481, "Session Does Not Exist")
        if sent.lost is not None:
            sent.lost(code, reason)
            return
        report = head_report(sent.head, sent.tid, code, reason)
        if report is not None and not self.report_to(sent.origin, report):
            logger.warning("relay failed: %s from %s not delivered, not reported", tid, sent.peer)

    def report_to(self, conid: int, report: bytes) -> bool:
        """Write a failure REPORT to the sender's connection `conid`, here or, when it moved
        to another worker since (colocate.py), there; False when it is gone."""
        res = self.res
        origin = res.conns.get(conid)
        if origin is not None and origin.out.write_frame(report):
            return True
        # Moving now (its new id may not be known yet: queued until MOVED), or moved before.
        mover, hub = res.mover, res.hub
        if mover is not None and mover.deliver(conid, report, HandoffFlags.NOTICE, None):
            return True
        moved = self.memory.moved.get(conid)
        if moved is None or hub is None:
            return False
        hub.send(moved[0], moved[1], 0, [report], HandoffFlags.NOTICE)
        return True

    def report_unsent(self, dest: Named, unsent: list[Unsent]) -> None:
        """Relayed frames `dest` will never get (the stop gave up on them): each sender hears
        of it, with a failure REPORT when its SEND asked for one (RFC 4975 §7.1.2). A frame
        from another worker is refused to it (GONE), and that worker reports (handoff_gone)."""
        reported = refused = 0
        why: dict[str, int] = {}
        counters, hub = self.res.counters, self.res.hub
        for source, head in unsent:
            counters.add(Counter.relay_fail)
            if isinstance(source, tuple):
                if hub is not None:
                    hub.refuse(source, dest.conid)
                    refused += 1
                continue
            report = relayed_report(head, 408, STOP_REASON)
            if report is None or not isinstance(source, int):
                why["not a SEND"] = why.get("not a SEND", 0) + 1
            elif self.report_to(source, report):
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
