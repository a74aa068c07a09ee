"""Accept balancing: a worker passes a new TCP connection to a less loaded worker (fd passing).

Why: SO_REUSEPORT picks the accepting worker by a hash of the connection's addresses. That
evens out over thousands of connections, not over a few busy ones: 8 connections over 2
workers often split 6/2, leaving one core idle while the other is saturated (issue 7).
Kamailio avoids this by handing every connection out from tcp_main.

Rules:
- Only plain TCP, only in connection_made, before any byte is read: the bytes wait in the
  socket for the new owner. TLS connections have already read their handshake; they stay.
- Each worker stores its open connection count in its heartbeat record on every open and
  close. A worker passes a connection on when it holds more than the least loaded RUNNING
  worker of its own generation; the peer list is refreshed once a second (and on accept while
  it is empty, at most every 0.1 s: right after start), the counts are read
  on every accept (one 4-byte load each), plus what we passed that the peer has not taken up
  yet (a burst of accepts would otherwise overshoot).
- The descriptor goes to the peer's accept socket (inbox.py) as PASSED (wire.py), with the
  listening address the connection came in on. If the send fails (peer gone, queue full), the
  connection stays here: it is never dropped for balancing's sake.
- A received connection is never passed on again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ...rundir import accept_path
from ...shm import Counter, Heartbeats, StatsCounters, WorkerState
from .fdpass import FdSender
from .inbox import AcceptInbox
from .state import Worker
from .wire import encode_passed

__all__ = ["AcceptBalancer"]

_LAZY_REFRESH = 0.1  # seconds: with no peer known, look again at most this often


class AcceptBalancer:
    """This worker's end of accept balancing, and of fd passing for every move.

    Args:
        run_dir: where every worker's accept socket lives.
        slot, generation, index: this worker's slot, generation and heartbeat record.
        heartbeats: the shared heartbeat table.
        counters: this worker's counters (conns_passed).
        sender: sends descriptors to other workers.
        inbox: this worker's accept socket (what others pass or move here).
    """

    def __init__(
        self,
        run_dir: Path,
        slot: int,
        generation: int,
        index: int,
        heartbeats: Heartbeats,
        counters: StatsCounters,
        sender: FdSender,
        inbox: AcceptInbox,
    ) -> None:
        self.run_dir = run_dir
        self.generation = generation
        self.index = index
        self.heartbeats = heartbeats
        self.counters = counters
        self.sender = sender
        self.inbox = inbox
        self.peers: list[tuple[int, int, Path]] = []  # (heartbeat index, slot, accept path)
        self._refreshed = 0.0
        self._sent: dict[int, tuple[int, int]] = {}  # peer -> (its count then, passed since)

    def start(self) -> None:
        """Listen for passed connections."""
        self.inbox.start()

    def shut(self) -> bool:
        """Take no more connections (AcceptInbox.shut): True when some were still queued."""
        return self.inbox.shut()

    def close(self) -> None:
        self.inbox.close()
        self.sender.close()

    def refresh(self, now: float | None = None) -> None:
        """Re-read which workers of this generation are RUNNING (once a second)."""
        peers = []
        for record in self.heartbeats.live():
            if (
                record.state is WorkerState.RUNNING
                and record.generation == self.generation
                and record.index != self.index
                and record.pid != 0
            ):
                path = accept_path(self.run_dir, record.slot, self.generation)
                peers.append((record.index, record.slot, path))
        self.peers = peers
        self._refreshed = time.monotonic() if now is None else now
        self._sent.clear()  # passes older than a second have been taken up (or closed)

    def offer(self, transport: asyncio.Transport, own_conns: int, listen_text: str) -> bool:
        """In connection_made of a plain TCP connection: True when it went to another worker
        (the caller then forgets it), False when it stays here."""
        if not self.peers:
            now = time.monotonic()
            if now - self._refreshed < _LAZY_REFRESH:
                return False
            self.refresh(now)  # just started: the others may be RUNNING by now
            if not self.peers:
                return False
        index, _slot, path = min(self.peers, key=lambda peer: self._load(peer[0]))
        if self._load(index) >= own_conns:
            return False
        # The peer's count before the send: it may take the connection up (and count it) before
        # we read its count again, and counting that one twice stopped the next pass.
        before = self.heartbeats.conns(index)
        if not self.sender.send([transport], path, encode_passed(listen_text)):
            return False
        # The peer holds the socket now: closing our descriptor leaves the connection open.
        self.counters.add(Counter.conns_passed)
        base, passed = self._sent.get(index, (before, 0))
        self._sent[index] = (base, passed + 1)
        transport.abort()
        return True

    def send_to(self, worker: Worker, transports: list[asyncio.Transport], message: bytes) -> bool:
        """Send the transports' sockets with `message` (wire.py) to `worker`'s accept socket;
        False (nothing sent) when that fails."""
        return self.sender.send(transports, accept_path(self.run_dir, *worker), message)

    def index_of(self, worker: Worker) -> int | None:
        """The heartbeat index of a RUNNING worker (slot, generation) of our generation."""
        slot, generation = worker
        if generation != self.generation:
            return None
        for index, peer_slot, _path in self.peers:
            if peer_slot == slot:
                return index
        return None

    def _load(self, index: int) -> int:
        """A peer's open connections, counting those passed to it that it has not taken up
        yet: in a burst of accepts its own count lags behind, and we would overshoot."""
        conns = self.heartbeats.conns(index)
        sent = self._sent.get(index)
        if sent is None:
            return conns
        base, passed = sent
        if conns >= base + passed:
            del self._sent[index]  # it has caught up
            return conns
        return base + passed
