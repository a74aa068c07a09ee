"""Helpers for hub tests: a peer that records what its hub hands it, and loop runners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from msrpd.workers.links import HandoffHub

LOOPS = ["uvloop", "asyncio"]


def run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.001)


class Peer:
    """A worker's view of its hub: live connections, and what arrived or failed."""

    def __init__(self, path: Path, live: Callable[[int], bool] = lambda conid: True) -> None:
        self.path = path
        self.live = live
        self.frames: list[tuple[int, bytes, int]] = []
        self.gone: list[tuple[int, int]] = []
        self.closed: list[int] = []
        self.hub = HandoffHub(
            path,
            self.deliver,
            self.on_gone,
            asyncio.get_running_loop(),
            close_conn=self.closed.append,
        )

    def deliver(
        self,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
        link: object = None,
    ) -> bool:
        if not self.live(conid):
            return False
        self.frames.append((conid, bytes(payload), flags))
        return True

    def on_gone(self, conid: int, token: int) -> None:
        self.gone.append((conid, token))

    async def __aenter__(self) -> Peer:
        await self.hub.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hub.close()
