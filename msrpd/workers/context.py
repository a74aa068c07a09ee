"""WorkerContext: the resources one worker's connections share, built once after fork.

Rules (style rule "no mutable globals"): the worker builds one context after fork; every
connection reaches the config, shared memory, the handoff links, the write batch and the
counters through it, as uvicorn passes ServerState into each protocol. Nothing on it changes
per frame: what a frame needs (its source, the frame itself) is passed as an argument.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..shm import Cmap, Counter, Registry, ShmSet, StatsCounters
from .accounting import account
from .batch import WriteBatch
from .conids import FIRST_SERIAL, SerialBlocks
from .connapi import Connection, as_protocol
from .gone import SentMemory
from .handoff import make_conid
from .handoffout import HandoffOut
from .links import HandoffHub
from .stopstate import StopState

if TYPE_CHECKING:
    from .migrate.balance import AcceptBalancer
    from .migrate.colocate import Mover

__all__ = ["WorkerContext", "WorkerIdentity"]

logger = logging.getLogger("msrpd.route")

_TRANSPORT_COUNTERS = {"ws": Counter.conns_ws, "wss": Counter.conns_wss}


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


class Forgets(Protocol):
    """Who keeps outbound connections by next hop (delivery.Delivery)."""

    def forget(self, conn: Connection) -> None: ...


class WorkerContext:
    def __init__(
        self,
        settings: Settings,
        ident: WorkerIdentity,
        shm: ShmSet,
        loop: asyncio.AbstractEventLoop,
        hub: Callable[[WorkerContext], HandoffHub] | None = None,
        stop: StopState | None = None,
        sent: SentMemory | None = None,
    ) -> None:
        """`hub` builds the handoff hub: its handler reads this context when messages come
        (inbound.py), so the hub is built from the context it is part of. `sent`: the memory of
        frames handed to other workers (gone.py), shared with whoever reports their loss."""
        self.settings = settings
        self.ident = ident
        self.shm = shm
        self.loop = loop
        self.counters = StatsCounters()
        self.stop = stop or StopState()
        """Where the graceful stop is (shared with the hub: it refuses frames once given up)."""
        self.conns: dict[int, Connection] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.balancer: AcceptBalancer | None = None
        self.mover: Mover[Connection] | None = None
        self.delivery: Forgets | None = None
        self.last_delivery = 0.0
        """When a handoff last brought a frame (monotonic): graceful stop waits for quiet."""
        self._serials: SerialBlocks | None = None  # built on first use (conids.py)
        built = hub(self) if hub is not None else None
        self.batch = WriteBatch(loop, built)
        self.handoffs = HandoffOut(
            built, settings.core.run_dir, self.counters, sent or SentMemory(self.stop)
        )

    @property
    def hub(self) -> HandoffHub | None:
        return self.handoffs.hub

    @property
    def cmap(self) -> Cmap | None:
        return self.shm.cmap

    @property
    def registry(self) -> Registry | None:
        return self.shm.registry

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

    def serve_socket(self, conn: Connection, sock: socket.socket) -> None:
        """Serve an accepted socket another worker passed here with `conn`."""

        async def serve() -> None:
            try:
                await self.loop.connect_accepted_socket(lambda: as_protocol(conn), sock)
            except OSError as exc:
                logger.warning("cannot serve a passed connection: %s", exc)
                sock.close()

        task = self.loop.create_task(serve())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- connections ------------------------------------------------------------------------

    def connection_opened(self, conn: Connection) -> None:
        self.conns[conn.conid] = conn
        self.shm.heartbeats.set_conns(self.ident.index, len(self.conns))
        if self.registry is not None and conn.listed:
            self.registry.register(conn.registry_key, conn.conid)
        if not conn.migration.moves:  # a connection moved here was counted where it was accepted
            self.counters.add(Counter.conns_total)
            per_transport = _TRANSPORT_COUNTERS.get(conn.wire.kind)
            if per_transport is not None:
                self.counters.add(per_transport)

    def connection_closed(self, conn: Connection) -> None:
        self.conns.pop(conn.conid, None)
        self.shm.heartbeats.set_conns(self.ident.index, len(self.conns))
        if self.registry is not None and conn.peer_key:
            self.registry.unregister(conn.registry_key, conn.conid)
        # A closed connection's sessions go with it (RFC 4976 §6.3).
        cmap = self.cmap
        if cmap is not None:
            for sessid in conn.stats.sessions:
                cmap.delete(sessid)
        if self.settings.log.accounting:
            account(conn.stats, conn.peer_key)
        if self.delivery is not None:
            self.delivery.forget(conn)
