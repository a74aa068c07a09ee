"""A worker's side of where.py: which other node of the cluster holds a token its cmap does
not, asked of the node's cluster agent (owners.py) without blocking anything but the frame
that needs it (routing/waits.py). Workers never talk to Redis.

Rules:
- An answer is kept: a node's URI for FOUND_TTL seconds, "no other node" (not found, Redis
  down, no answer within [cluster] timeout, the address naming this relay) for MISS_TTL
  seconds, so a stream of frames for one token asks once, and the frame routed again after
  its answer finds it. At most CACHE_MAX answers, the oldest forgotten first.
- A miss sends one question per token (frames for the same token share it) and raises
  NotYet. At most MAX_IN_FLIGHT questions at a time: over it, or when the agent is not
  there, the answer is "no other node" at once, not kept (nothing waits without bound, and
  made-up tokens cannot queue). Deadlines are kept in one deque with one timer armed while
  questions are out: no timer per question.
- Shared fairly (a prober of made-up tokens, Redis slow, must not take every question from
  the senders of real ones): a connection (its Asker, kept by ConnEnv) has at most PER_CONN
  questions out: over it, its frame waits for its oldest one and is routed again (in order,
  waits.py), or, when it cannot wait (routed after its sender's 200), is answered "no other
  node". Connections from one source address have at most PER_ADDR out together. And a
  connection may have MISS_BURST questions answered "no node holds it", then one a second
  (MISS_RATE): a stale peer's tokens cost it little, a prober's stream of made-up ones is
  answered at once. Refused so: no other node, not kept, counted (cluster_lookups_refused).
  Such misses do not ban: a token nobody holds is no wrong password, and a relay's
  connection carries its clients' stale tokens; probation ([limits]) closes a connection
  that has proven nothing.
- One SOCK_SEQPACKET connection per worker to the agent's socket (where.py): messages keep
  their bounds, only the agent can answer on it (no other process can name a forwarding
  address), and no question is lost to a datagram queue's few slots (net.unix.max_dgram_qlen,
  10 by default, over every worker). The agent restarted: connected again at the next
  question; the questions out on the old connection time out.
- The URI a frame is forwarded to is `msrps://<the node's address>/<token>;tcp`: TLS between
  nodes (README "Running a cluster"), the address from the registry only.
- Counted: cluster_lookups (questions sent), cluster_lookup_failures (Redis down, no answer
  in time, over the bound, the agent not there); logged once when lookups start failing and
  once when an answer comes again; cluster_lookups_refused (a connection's or an address's
  share used up), a connection's miss budget logged once when it runs out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ..protocol import LocalProtocolError, MsrpUri, parse_uri
from ..routing.waits import NotYet
from ..shm import Counter, StatsCounters
from .where import DOWN, FOUND, decode_answer, encode_ask, valid_token

__all__ = [
    "CACHE_MAX",
    "FOUND_TTL",
    "MAX_IN_FLIGHT",
    "MISS_BURST",
    "MISS_RATE",
    "MISS_TTL",
    "PER_ADDR",
    "PER_CONN",
    "Asker",
    "NodeFinder",
]

logger = logging.getLogger(__name__)

FOUND_TTL: Final = 10.0
"""A token's node does not change (a session never moves between nodes); the TTL bounds how
long frames go to a node after the session ended there (that node then answers 481)."""
MISS_TTL: Final = 1.0
"""Short: a new session's directory entry is written at its node's next heartbeat."""
CACHE_MAX: Final = 4096
MAX_IN_FLIGHT: Final = 64
PER_CONN: Final = 2
"""A connection's frames wait in turn for their answers: only one routed after its sender's
200 (a path naming this relay twice, README) leaves a question out without waiting."""
PER_ADDR: Final = MAX_IN_FLIGHT // 4
"""Four source addresses at least to take every question of a worker."""
MISS_BURST: Final = 8
MISS_RATE: Final = 1.0
_RECV_MAX: Final = 512
_SCHEME: Final = re.compile(r"^msrps?://", re.I)


class Asker:
    """What one connection asked (ConnEnv keeps it, its inner hops share it): its questions
    out, and its misses as a bucket's debt (MISS_BURST, paid back at MISS_RATE)."""

    __slots__ = ("addr", "debt", "out", "paid", "peer", "told")

    def __init__(self, peer: str, addr: str) -> None:
        self.peer = peer
        self.addr = addr
        """Its source address (workers/peers.source_host): PER_ADDR."""
        self.out: list[_Lookup] = []
        self.debt = 0.0
        self.paid = 0.0
        """When `debt` was last brought up to date (monotonic)."""
        self.told = False
        """Its running out of misses was logged."""

    def owes(self, now: float) -> float:
        self.debt = max(0.0, self.debt - (now - self.paid) * MISS_RATE)
        self.paid = now
        return self.debt


class _Lookup:
    """One question out (waits.Pending): the frames to route again when it is answered."""

    __slots__ = ("asker", "deadline", "id", "resumes", "token")

    def __init__(self, id_: str, token: str, deadline: float, asker: Asker) -> None:
        self.id = id_
        self.token = token
        self.deadline = deadline
        self.asker = asker
        """The connection that asked (frames of others may wait for the answer too)."""
        self.resumes: list[Callable[[], None]] = []

    def then(self, resume: Callable[[], None]) -> None:
        self.resumes.append(resume)


class NodeFinder:
    def __init__(
        self,
        path: Path,
        timeout: float,
        counters: StatsCounters,
        loop: asyncio.AbstractEventLoop,
        ours: Callable[[MsrpUri], bool],
    ) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.counters = counters
        self.loop = loop
        self.ours = ours
        """Whether a URI names this relay: a registry address that does is a misconfigured
        node (two nodes with one address), never forwarded to."""
        self.cache: dict[str, tuple[float, MsrpUri | None]] = {}
        self.out: dict[str, _Lookup] = {}
        """Questions out, by token."""
        self.by_addr: dict[str, int] = {}
        """Questions out per source address, while it has some."""
        self.deadlines: deque[_Lookup] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.sock: socket.socket | None = None
        self.serial = 0
        self.failing = False

    def where(self, token: str, asker: Asker) -> MsrpUri | None:
        """The URI of `token` at the node holding it, None when no other node does; raises
        NotYet while the question is out (or while `asker`'s oldest is: then ask again)."""
        hit = self.cache.get(token)
        if hit is not None:
            until, uri = hit
            if time.monotonic() < until:
                return uri
            del self.cache[token]
        lookup = self.out.get(token)
        if lookup is None:
            if not valid_token(token):
                return None  # no node issues such a token
            lookup = self._new(token, asker)
            if lookup is None:
                return None
        raise NotYet(lookup)

    def _new(self, token: str, asker: Asker) -> _Lookup | None:
        """A question for `token` from `asker`, its oldest when it has its share out, or
        None when it may not ask (answered: no other node)."""
        if asker.debt and asker.owes(time.monotonic()) > MISS_BURST - 1:  # no room for one
            self.counters.add(Counter.cluster_lookups_refused)
            return None
        if len(asker.out) >= PER_CONN:
            return asker.out[0]
        if self.by_addr.get(asker.addr, 0) >= PER_ADDR:
            self.counters.add(Counter.cluster_lookups_refused)
            return None
        if len(self.out) >= MAX_IN_FLIGHT:
            self._failed(f"{MAX_IN_FLIGHT} lookups in flight")
            return None
        return self._ask(token, asker)

    def _ask(self, token: str, asker: Asker) -> _Lookup | None:
        self.serial += 1
        lookup = _Lookup(f"{self.serial:x}", token, time.monotonic() + self.timeout, asker)
        try:
            self._send(encode_ask(lookup.id, token))
        except OSError as exc:
            self._failed(f"the cluster agent is not there ({exc})")
            return None
        self.counters.add(Counter.cluster_lookups)
        self.out[token] = lookup
        asker.out.append(lookup)
        self.by_addr[asker.addr] = self.by_addr.get(asker.addr, 0) + 1
        self.deadlines.append(lookup)
        if self.timer is None:
            self.timer = self.loop.call_at(self._loop_time(lookup.deadline), self._expire)
        return lookup

    def _send(self, data: bytes) -> None:
        """Send to the agent over this worker's connection, made first (again after the
        agent restarted: the old one is broken). A full send buffer (the agent stopped
        reading) fails the lookup like an agent that is not there."""
        for attempt in (1, 2):
            try:
                self._socket().send(data)
                return
            except (BrokenPipeError, ConnectionError, FileNotFoundError):
                self._drop_socket()
                if attempt == 2:
                    raise

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                # Never blocks the loop: an agent whose backlog is full (its loop stuck) is
                # EAGAIN here, an agent not there as far as this lookup goes.
                sock.setblocking(False)
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self.loop.add_reader(sock.fileno(), self._readable)
            self.sock = sock
        return self.sock

    def _drop_socket(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(_RECV_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("cluster: reading a where-is answer failed: %s", exc)
                data = b""
            if not data:  # the agent went (a restart): connect again at the next question
                self._drop_socket()
                return
            try:
                answer = decode_answer(data)
            except ValueError as exc:
                logger.warning("cluster: ignoring %s", exc)
                continue
            lookup = self.out.get(answer.token)
            if lookup is None or lookup.id != answer.id:
                continue  # late: it timed out
            if answer.status == FOUND:
                self._done(lookup, self._uri(answer.addr, answer.token), FOUND_TTL)
            elif answer.status == DOWN:
                self._failed("Redis is not answering")
                self._done(lookup, None, MISS_TTL)
            else:
                self._missed(lookup.asker)
                self._done(lookup, None, MISS_TTL)
            if self.failing and answer.status != DOWN:
                self.failing = False
                logger.warning("cluster: token lookups answered again")

    def _uri(self, addr: str, token: str) -> MsrpUri | None:
        try:
            uri = parse_uri(f"msrps://{_SCHEME.sub('', addr)}/{token};tcp")
        except LocalProtocolError:
            logger.warning("cluster: a node's address %r is not host:port", addr[:80])
            return None
        if self.ours(uri):
            logger.warning("cluster: another node has this relay's address %s", addr[:80])
            return None
        return uri

    def _missed(self, asker: Asker) -> None:
        """No node holds what `asker` asked about (Redis down or slow is not its doing)."""
        debt = asker.owes(time.monotonic()) + 1
        asker.debt = debt
        if debt > MISS_BURST - 1 and not asker.told:
            asker.told = True
            logger.info(
                "cluster: %s asked where %d tokens nobody holds are: one such question a "
                "second from it now",
                asker.peer,
                MISS_BURST,
            )

    def _done(self, lookup: _Lookup, uri: MsrpUri | None, ttl: float) -> None:
        del self.out[lookup.token]
        asker = lookup.asker
        asker.out.remove(lookup)
        left = self.by_addr.pop(asker.addr) - 1
        if left:
            self.by_addr[asker.addr] = left
        cache = self.cache
        cache[lookup.token] = (time.monotonic() + ttl, uri)
        while len(cache) > CACHE_MAX:
            del cache[next(iter(cache))]
        for resume in lookup.resumes:
            try:
                resume()
            except Exception:  # one connection's failure must not strand the others
                logger.exception("resuming a frame that waited for a token lookup failed")

    def _expire(self) -> None:
        self.timer = None
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines and deadlines[0].deadline <= now:
            lookup = deadlines.popleft()
            if self.out.get(lookup.token) is lookup:
                self._failed(f"no answer within {self.timeout:g} s")
                self._done(lookup, None, MISS_TTL)
        while deadlines and self.out.get(deadlines[0].token) is not deadlines[0]:
            deadlines.popleft()  # answered
        if deadlines:
            self.timer = self.loop.call_at(self._loop_time(deadlines[0].deadline), self._expire)

    def _loop_time(self, deadline: float) -> float:
        return self.loop.time() + max(0.0, deadline - time.monotonic())

    def _failed(self, why: str) -> None:
        self.counters.add(Counter.cluster_lookup_failures)
        if not self.failing:
            self.failing = True
            logger.warning(
                "cluster: a token lookup failed: %s (frames for tokens of other nodes get 481 "
                "while lookups fail)",
                why,
            )

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_socket()
