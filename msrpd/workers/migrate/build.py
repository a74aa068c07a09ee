"""Building a worker's migration objects, in the one order their constructors allow (each
gets what it uses when it is made; nothing is wired in afterwards)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

from ...rundir import accept_path
from ...shm import Heartbeats
from .balance import AcceptBalancer
from .colocate import Mover
from .fdpass import FdSender
from .handoverio import Handover
from .inbox import AcceptInbox
from .lock import MoveLock
from .ports import ConnT, LinkConn, WorkerPort
from .retire import Retirer
from .retirelinks import RetiringLinks, Unlister
from .state import Worker

__all__ = ["Migration", "build_migration"]


@dataclass(frozen=True, slots=True)
class Migration(Generic[ConnT]):
    """What the worker holds: the balancer (accept socket in, fd passing out), the mover
    (colocation, and the handover behind it), the retirer (after a reload)."""

    balancer: AcceptBalancer
    mover: Mover[ConnT]
    retirer: Retirer[ConnT]


def build_migration(
    host: WorkerPort[ConnT],
    links: Mapping[int, LinkConn],
    heartbeats: Heartbeats,
    *,
    run_dir: Path,
    me: Worker,
    index: int,
    colocate: bool,
    linger: float,
    delivery: Unlister | None,
    new_conn: Callable[[str], ConnT],
    adopt: Callable[[socket.socket, str], None],
) -> Migration[ConnT]:
    """Args:
    host: the worker's shared resources.
    links: the worker's connections, as retirelinks.py sees them (host.conns).
    heartbeats: the shared heartbeat table.
    run_dir, me, index: where the sockets live; this worker and its heartbeat record.
    colocate: `[core] balance`: balance accepts and move pairs together. Built without it
        too: peers of another setting (a reload) still get their FENCE answered, and what
        they pass or move here is served.
    linger: `[core] drain_timeout`: when a retiring worker's links close anyway.
    delivery: takes the links to next hops out of the registry (retiring).
    new_conn: a connection object for a socket passed or moved here.
    adopt: serves a connection another worker accepted and passed here.
    """
    lock = MoveLock(run_dir)
    handover = Handover(host, heartbeats, me, index, lock, new_conn)
    counters = host.counters
    inbox = AcceptInbox(accept_path(run_dir, *me), adopt, handover.adopt, counters, host.loop)
    balancer = AcceptBalancer(run_dir, *me, index, heartbeats, counters, FdSender(), inbox)
    mover = Mover(host, balancer, handover, lock, colocate=colocate)
    retiring = RetiringLinks(links, me[0], delivery, linger)
    retirer = Retirer(host, heartbeats, me[1], balancer, handover, lock, retiring)
    return Migration(balancer, mover, retirer)
