"""The cluster agent as one of the supervisor's children (cluster/agent.py; issue 17): forked
at start when [cluster] redis is set, reaped, respawned, stopped with the workers.

Rules: as a worker's slot (reaper.py): respawned at once, or after a backoff doubling up to
MAX_BACKOFF when it keeps dying young; its stats slot (rundir.AGENT_INDEX) is folded into
the totals when it is reaped, so its gauge reads Redis down until the next agent connects.
The agent module (and redis with it) is imported in the child only: the supervisor and the
workers never load it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Final

from ..config import Settings
from ..rundir import AGENT_INDEX
from ..shm import ShmLayout, Stats

__all__ = ["AgentProc"]

logger = logging.getLogger(__name__)

YOUNG: Final = 2.0
MAX_BACKOFF: Final = 8.0


class AgentProc:
    def __init__(
        self, layout: ShmLayout, stats: Stats, in_child: Callable[[], None], settings: Settings
    ) -> None:
        self.settings = settings
        """What the next agent starts with (the newest settings)."""
        self.layout = layout
        self.stats = stats
        self.in_child = in_child
        self.pid: int | None = None
        self.started = 0.0
        self.backoff = 0.0
        self.respawn_at: float | None = None
        self.restarting = False

    def start(self) -> None:
        settings = self.settings
        if settings.cluster.redis is None:
            self.respawn_at = None  # a reload took the cluster away during a backoff
            return
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._child(settings, supervisor)
        self.pid, self.started, self.respawn_at = pid, time.monotonic(), None
        logger.info("cluster agent started, pid %d", pid)

    def _child(self, settings: Settings, supervisor: int) -> None:
        status = 1
        try:
            self.in_child()
            from ..cluster.agent import run_agent  # noqa: PLC0415 (only the agent loads redis)

            status = run_agent(settings, self.layout, supervisor)
        except BaseException:
            logger.exception("cluster agent crashed")
        finally:
            logging.shutdown()
            os._exit(status)

    def restart(self, settings: Settings) -> None:
        """A reload: a new agent starts at once with `settings`. The old one exits without
        leaving the cluster (SIGUSR2), unless the node leaves it: no cluster any more, or
        another server, prefix or name (SIGTERM)."""
        old, new = self.settings.cluster, settings.cluster
        same = (old.redis, old.key_prefix, old.node) == (new.redis, new.key_prefix, new.node)
        self.settings = settings
        if self.pid is not None:
            self.restarting = True
            os.kill(self.pid, signal.SIGUSR2 if same else signal.SIGTERM)
        elif new.redis is not None:
            self.respawn_at = time.monotonic()

    def reaped(self, pid: int, status: int, *, stopping: bool) -> bool:
        """True when `pid` was the agent (then it is handled)."""
        if pid != self.pid:
            return False
        self.pid = None
        self.stats.retire(AGENT_INDEX)
        code = os.waitstatus_to_exitcode(status)
        if self.restarting and not stopping:
            self.restarting = False
            logger.info("cluster agent (pid %d) exited for the reload", pid)
            self.start()
            return True
        if stopping:
            logger.info("cluster agent (pid %d) exited: %d", pid, code)
            return True
        young = time.monotonic() - self.started < YOUNG
        self.backoff = min(self.backoff * 2 or 0.25, MAX_BACKOFF) if young else 0.0
        logger.error(
            "cluster agent (pid %d) died (%d); respawning in %.2f s", pid, code, self.backoff
        )
        self.respawn_at = time.monotonic() + self.backoff
        return True

    def maintain(self) -> None:
        """Respawn the agent when its backoff is over."""
        due = self.respawn_at is not None and time.monotonic() >= self.respawn_at
        if due:
            self.start()

    def kill(self, signum: signal.Signals) -> None:
        """Send `signum` to the agent, if one runs."""
        if self.pid is not None:
            os.kill(self.pid, signum)

    @property
    def running(self) -> bool:
        return self.pid is not None
