"""Waiting for the next heartbeat unless the agent stops first."""

from __future__ import annotations

import asyncio

__all__ = ["stopped_within"]


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`: True as soon as `stop` is set, False when the time is up."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
