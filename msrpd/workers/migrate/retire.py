"""Retiring after a reload: an old worker hands its connections to the new generation.

Why (issue 12): MSRP sessions last hours. Closing them when the old generation's time is up
drops every one, so a retiring worker moves its connections, with their sessions and reader
state, to the newest workers instead (fd passing; handover.py does the move).

Rules:
- What moves: plain TCP connections a client opened, each as soon as it is between frames
  with nothing waiting to be written (colocate.ready_to_move), whatever `[core] balance` says. What
  cannot move stays and is served here until it closes (or `[core] retire_timeout` passes):
  TLS connections (their state is this process's SSL object). Connections the relay opened
  to a next hop leave the registry at once, so the new generation opens its own, and close
  once quiet (retirelinks.py).
- Where: the RUNNING workers of the newest generation (heartbeats), each connection to the
  one with the fewest connections, counting what this batch already gives it.
- Fast: one batch under one hold of the relay-wide move lock, every connection that can move
  now (up to BATCH), up to MAX_FDS sockets per datagram (wire.py's BATCH). The lock goes back
  when the last of them is released, and the next batch follows at once.
- Nothing lost or reordered: each handover fences first (handover.py, step 4), since the
  connection may have relayed to any worker a moment before. A datagram that cannot be sent
  (the target's queue is full, or it is gone) leaves its connections here, reading again;
  a later batch takes them.
"""

from __future__ import annotations

import logging
import time
from typing import Generic

from ...shm import Heartbeats, WorkerState
from .balance import AcceptBalancer
from .colocate import move_message, ready_to_move
from .fdpass import MAX_FDS
from .handoverio import Handover
from .lock import MoveLock
from .ports import ConnT, WorkerPort
from .retirelinks import RetiringLinks
from .state import Worker
from .wire import encode_batch

__all__ = ["Retirer"]

logger = logging.getLogger(__name__)

BATCH = 512
"""Connections moved under one hold of the move lock."""
LOCK_RETRY = 0.01
"""Seconds before trying again when another worker holds the move lock."""
DATAGRAM = 96 * 1024
"""Bytes of move messages in one datagram (the receiver reads up to 128 KiB)."""


class Retirer(Generic[ConnT]):
    """This worker's handover of its connections once it is told to retire.

    Args:
        host: the worker's shared resources (its connections, its loop).
        heartbeats: where the new generation's workers are.
        generation: this worker's generation.
        balancer: sends the sockets (fd passing).
        handover: what happens once a socket is sent.
        lock: the relay-wide move lock.
        links: this worker's links to next hops, closed once quiet.
    """

    def __init__(
        self,
        host: WorkerPort[ConnT],
        heartbeats: Heartbeats,
        generation: int,
        balancer: AcceptBalancer,
        handover: Handover[ConnT],
        lock: MoveLock,
        links: RetiringLinks,
    ) -> None:
        self.host = host
        self.heartbeats = heartbeats
        self.generation = generation
        self.balancer = balancer
        self.handover = handover
        self.lock = lock
        self.links = links
        self.active = False
        self.moved = 0
        self.started = 0.0
        self._scheduled = False
        self._retrying = False

    def start(self) -> None:
        """Told to retire: hand over from now on."""
        if not self.active:
            self.active = True
            self.started = time.monotonic()
            self.links.start(self.started)
            self.soon()

    def soon(self) -> None:
        """Try the next batch from a loop callback (never from inside a handoff dispatch);
        called again when the last move out is over (MoveLock.when_free)."""
        if self.active and not self._scheduled:
            self._scheduled = True
            self.host.loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.step()

    def _retry(self) -> None:
        self._retrying = False
        self.step()

    def done(self) -> bool:
        """No connection left here, and no move unfinished."""
        return not self.host.conns and not self.handover.busy()

    def step(self) -> None:
        """Send the next batch, unless a move is unfinished (the last one's release calls
        this again) or another worker holds the lock (tried again soon)."""
        host, lock = self.host, self.lock
        if self.active:
            self.links.tick(time.monotonic())
        if not self.active or not host.conns:
            return
        if self.handover.busy():
            lock.when_free(self.soon)
            return
        targets = self._targets()
        if not targets:
            return
        if not any(conn.migration.movable for conn in host.conns.values()):
            return  # what is left cannot move (TLS, links to next hops, closing when quiet)
        if not lock.acquire():
            if not self._retrying:  # another worker's batch is out: look again soon
                self._retrying = True
                self.host.loop.call_later(LOCK_RETRY, self._retry)
            return
        sent = 0
        try:
            ready = self._ready()
            for owner, group in self._assign(ready, targets).items():
                sent += self._send(owner, group)
        finally:
            if not sent:
                lock.release()
        self.moved += sent
        if sent:
            lock.when_free(self.soon)
            logger.debug("retiring: %d of %d connections sent", sent, len(host.conns) + sent)

    def _ready(self) -> list[tuple[ConnT, bytes]]:
        """Up to BATCH connections that can move now, with their move messages."""
        host, me = self.host, self.handover.machine.me
        host.batch.flush_now()  # what is written to a connection leaves before it can move
        ready: list[tuple[ConnT, bytes]] = []
        for conn in list(host.conns.values()):
            held = ready_to_move(conn, host.stop.stopping, handover=True)
            message = None if held is None else move_message(conn, held, me, handover=True)
            if message is not None:
                ready.append((conn, message))
                if len(ready) >= BATCH:
                    break
        return ready

    def _targets(self) -> dict[Worker, int]:
        """The RUNNING workers of the newest generation -> their heartbeat index."""
        mine = self.generation
        newest: dict[Worker, int] = {}
        top = mine
        for record in self.heartbeats.live():
            if record.pid == 0 or record.state is not WorkerState.RUNNING:
                continue
            if record.generation > top:
                top, newest = record.generation, {}
            if record.generation == top and top > mine:
                newest[(record.slot, record.generation)] = record.index
        return newest

    def _assign(
        self, ready: list[tuple[ConnT, bytes]], targets: dict[Worker, int]
    ) -> dict[Worker, list[tuple[ConnT, bytes]]]:
        heartbeats = self.heartbeats
        load = {worker: heartbeats.conns(index) for worker, index in targets.items()}
        groups: dict[Worker, list[tuple[ConnT, bytes]]] = {}
        for item in ready:
            worker = min(load, key=load.__getitem__)
            load[worker] += 1
            groups.setdefault(worker, []).append(item)
        return groups

    def _send(self, owner: Worker, group: list[tuple[ConnT, bytes]]) -> int:
        """Send `group` to `owner` in datagrams; how many connections went."""
        sent = 0
        for chunk in _chunks(group):
            # ready_to_move checked that each has its transport.
            transports = [conn.wire.transport for conn, _ in chunk]
            ready = [transport for transport in transports if transport is not None]
            for transport in ready:
                transport.pause_reading()
            message = encode_batch([m for _, m in chunk])
            if not self.balancer.send_to(owner, ready, message):
                for transport in ready:
                    transport.resume_reading()
                break  # its queue is full, or it is gone: the rest goes with a later batch
            for conn, _ in chunk:
                self.handover.send_away(conn, owner, fence_first=True)
            sent += len(chunk)
        return sent


def _chunks(
    group: list[tuple[ConnT, bytes]],
) -> list[list[tuple[ConnT, bytes]]]:
    """`group` cut into datagrams of at most MAX_FDS connections and about DATAGRAM bytes
    (one connection with a large held frame goes alone)."""
    chunks: list[list[tuple[ConnT, bytes]]] = []
    size = 0
    for item in group:
        full = bool(chunks) and (len(chunks[-1]) >= MAX_FDS or size + len(item[1]) > DATAGRAM)
        if not chunks or full:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item[1]) + 4
    return chunks
