"""Forking one worker: its spec from the settings in force, its heartbeat slot claimed for it,
and in the child, the supervisor's descriptors closed before the worker runs.

Rules (style rule 13): worker slot i accepts on the supervisor's socket(s) for slot i; the
heartbeat slot is claimed before the fork (pid 0) and again with the pid after it, and the
child's first connection-id serial is reserved before it can hand one out (workers/conids.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from ..config import Settings
from ..process.listeners import ListenerSet
from ..shm import Heartbeats, ShmLayout
from ..workers.context import WorkerIdentity
from ..workers.worker import Worker, WorkerSpec

__all__ = ["Spawner"]

logger = logging.getLogger(__name__)


class Spawner:
    def __init__(
        self,
        layout: ShmLayout,
        heartbeats: Heartbeats,
        listeners: ListenerSet,
        in_child: Callable[[], None],
    ) -> None:
        """`in_child` closes, in the forked child, what the supervisor holds open."""
        self.layout = layout
        self.heartbeats = heartbeats
        self.listeners = listeners
        self.in_child = in_child
        self.nonce_secret = os.urandom(32)
        """Shared by every worker, so a digest nonce one worker issued verifies in another."""

    def spawn(self, settings: Settings, ident: WorkerIdentity) -> int:
        """Fork the worker `ident`; its pid."""
        spec = WorkerSpec(
            settings=settings,
            ident=ident,
            sockets=self.listeners.for_slot(settings.core.listen, ident.slot),
            layout=self.layout,
            nonce_secret=self.nonce_secret,
            supervisor_pid=os.getpid(),
        )
        worker = Worker(spec)
        self.heartbeats.claim(ident.index, 0, ident.slot, ident.generation)
        self.heartbeats.reserve_serials(ident.index, ident.first_serial)  # the child's now
        pid = os.fork()
        if pid == 0:
            self._child(worker)
        self.heartbeats.claim(ident.index, pid, ident.slot, ident.generation)
        return pid

    def _child(self, worker: Worker) -> None:
        status = 1
        try:
            self.in_child()
            status = worker.run()
        except BaseException:
            logger.exception("worker crashed")
        finally:
            logging.shutdown()
            os._exit(status)
