"""Housekeeping: what a worker does to its connections once a tick (worker.py's ticker)."""

from __future__ import annotations

import logging
import time

from ..shm import Counter
from .context import WorkerContext

__all__ = ["close_idle", "publish"]

logger = logging.getLogger(__name__)


def close_idle(ctx: WorkerContext) -> None:
    """Close the connections idle for idle_timeout, and those whose frame head is not
    complete after head_timeout (slowloris)."""
    now = time.monotonic()
    core = ctx.settings.core
    limit = now - core.idle_timeout
    head_limit = now - core.head_timeout
    for conn in list(ctx.conns.values()):
        out = conn.out
        if out.sent_log.records:
            out.trim_sent()  # so a quiet connection keeps no relayed frame alive
        closing = conn.wire.tick(now, conn.stats.last_active)
        if closing:
            logger.info("closing %s: %s", conn.peer_key, closing)
            conn.close(closing)
        elif conn.stats.last_active < limit:
            idle = core.idle_timeout
            logger.info("closing %s: idle for %.0f s", conn.peer_key, idle)
            conn.close(f"idle for {idle:.0f} s")
        elif conn.head_overdue(head_limit):
            # Slowloris: every byte refreshes last_active, so only a deadline per head
            # ends a connection that never completes one.
            ctx.counters.add(Counter.head_timeouts)
            logger.info(
                "closing %s: frame head not complete after %.0f s",
                conn.peer_key,
                core.head_timeout,
            )
            conn.close(f"frame head not complete after {core.head_timeout:.0f} s")


def publish(ctx: WorkerContext) -> None:
    """The worker's counters, where the supervisor and the metrics endpoint read them."""
    ctx.counters.values[Counter.conns_open] = len(ctx.conns)
    ctx.shm.stats.publish(ctx.ident.index, ctx.counters)
