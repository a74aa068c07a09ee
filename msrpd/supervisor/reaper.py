"""What a worker's death leaves to do: free its table slots, purge what it owned, keep its
connection-id mark, and schedule its slot's respawn.

Rules:
- A reaped worker's sessions and registry entries are purged at once, before anything could
  respawn its slot: its connections died with it. Its successor keeps its (slot, generation),
  so routing by owner keeps working, and starts its connection ids above every one the dead
  worker may have used (workers/conids.py): a stale id never reaches a stranger (issue 12).
- A worker that exits with WORKER_BOOT_ERROR halts the supervisor (no fork loop). Other deaths
  are respawned at once, or after a backoff when the slot keeps dying young.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Container
from typing import Final

from ..errors import HaltSupervisor
from ..shm import PROBATION, ShmSet, probation_key
from ..workers.conids import FIRST_SERIAL
from ..workers.handoff import owner_conids
from ..workers.peers import CLIENT_PREFIX, source_host
from ..workers.worker import WORKER_BOOT_ERROR
from .workerset import WorkerProc

__all__ = ["EXIT_BOOT_ERROR", "Reaper"]

logger = logging.getLogger(__name__)

EXIT_BOOT_ERROR: Final = 3
YOUNG: Final = 2.0  # a worker that dies younger than this slows its slot's respawns down
MAX_BACKOFF: Final = 8.0


class Reaper:
    def __init__(self, shm: ShmSet) -> None:
        self.shm = shm
        self.serials: dict[tuple[int, int], int] = {}
        """(slot, generation) -> the first connection-id serial its next worker may use."""
        self.backoff: dict[int, float] = {}
        self.respawn_at: dict[int, float] = {}

    def first_serial(self, slot: int, generation: int) -> int:
        return self.serials.get((slot, generation), FIRST_SERIAL)

    def new_generation(self, generation: int) -> None:
        self.serials = {k: v for k, v in self.serials.items() if k[1] == generation}
        # Every slot starts now: a respawn still waiting out its backoff would start a second
        # worker of the same (slot, generation), handing out the same connection ids.
        self.respawn_at.clear()

    def due(self) -> list[int]:
        """The slots whose respawn is due now (each returned once)."""
        now = time.monotonic()
        slots = [slot for slot, when in self.respawn_at.items() if now >= when]
        for slot in slots:
            del self.respawn_at[slot]
        return slots

    def reaped(self, proc: WorkerProc, status: int, *, stopping: bool, generation: int) -> None:
        """Worker `proc` exited with wait status `status`; `generation` is the newest one.

        Raises:
            HaltSupervisor: it failed to boot.
        """
        slot, gen = proc.ident.slot, proc.ident.generation
        mark = self.shm.heartbeats.serial_mark(proc.ident.index)
        self.serials[slot, gen] = max(self.first_serial(slot, gen), mark)
        self.shm.heartbeats.release(proc.ident.index)
        self._release_probation(proc.ident.index)
        self.shm.stats.retire(proc.ident.index)
        code = os.waitstatus_to_exitcode(status)
        # At stop the tables go away with the supervisor: only a worker that died (not one
        # that finished) is purged then, for the sake of those still draining.
        if not stopping or code != 0:
            self._purge(slot, gen)
        if code == WORKER_BOOT_ERROR:
            raise HaltSupervisor(
                f"worker {slot} failed to boot (see the log above)", EXIT_BOOT_ERROR
            )
        if stopping or proc.retiring or gen != generation:
            logger.info("worker %d (generation %d, pid %d) exited: %d", slot, gen, proc.pid, code)
            return
        logger.error("worker %d (pid %d) died (%d); respawning", slot, proc.pid, code)
        young = time.monotonic() - proc.started < YOUNG
        delay = min(self.backoff.get(slot, 0.0) * 2 or 0.25, MAX_BACKOFF) if young else 0.0
        self.backoff[slot] = delay
        self.respawn_at[slot] = time.monotonic() + delay

    def _purge(self, slot: int, generation: int) -> None:
        """Remove the sessions and registry entries of worker (slot, generation)'s
        connections: they died with it. A SEND to one of its sessions gets 481 now (RFC 4976
        §6.3, rfc-checklist case 21c), and a next hop it was connected to is dialled again."""
        conids = owner_conids(slot, generation)
        self._release_addresses(conids)
        sessions = self.shm.cmap.purge(conids)
        entries = self.shm.registry.purge(conids)
        if sessions or entries:
            logger.warning(
                "worker %d (generation %d) left %d sessions and %d connections: removed",
                slot,
                generation,
                sessions,
                entries,
            )

    def _release_probation(self, index: int) -> None:
        """The worker's connections on probation no longer count against max_unauth_conns."""
        addrs, now = self.shm.addrs, time.time()
        share = addrs.conns(probation_key(index))
        if share:
            addrs.release(probation_key(index), share, now)
            addrs.release(PROBATION, share, now)

    def _release_addresses(self, conids: Container[int]) -> None:
        """Its clients' connections no longer count against their source address's limit
        ([limits] max_conns_per_addr): the registry still names them (shm/addrs.py)."""
        hosts = Counter(
            source_host(key) for key in self.shm.registry.keys_of(conids, CLIENT_PREFIX)
        )
        now = time.time()
        for host, n in hosts.items():
            self.shm.addrs.release(host, n, now)
