"""Helpers for hub tests: a peer that records what its hub hands it, and loop runners."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Self

import uvloop

from msrpd.workers.handoff import Handoff
from msrpd.workers.link import Link
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
    """A worker's view of its hub (its HubHandler): live connections, and what arrived or
    failed."""

    def __init__(
        self,
        path: Path,
        live: Callable[[int], bool] = lambda conid: True,
        max_payload: int | None = None,
    ) -> None:
        self.path = path
        self.live = live
        self.frames: list[tuple[int, bytes, int]] = []
        self.gone: list[tuple[int, int]] = []
        self.closed: list[int] = []
        self.flow: list[tuple[bool, int, int, int]] = []
        self.control: list[tuple[Link, Handoff]] = []
        self.links_lost: list[int] = []
        self.reads = 0  # before_read calls
        loop = asyncio.get_running_loop()
        if max_payload is None:
            self.hub = HandoffHub(path, loop, self)
        else:
            self.hub = HandoffHub(path, loop, self, max_payload=max_payload)

    def before_read(self) -> None:
        self.reads += 1

    def after_read(self) -> None:
        pass

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        if not self.live(conid):
            return False
        self.frames.append((conid, bytes(payload), flags))
        return True

    def on_gone(self, conid: int, token: int) -> None:
        self.gone.append((conid, token))

    def close_conn(self, conid: int) -> None:
        self.closed.append(conid)

    def on_flow(self, pause: bool, conid: int, token: int, link_id: int) -> None:
        self.flow.append((pause, conid, token, link_id))

    def on_control(self, link: Link, msg: Handoff) -> None:
        self.control.append((link, msg))

    def on_link_lost(self, link_id: int) -> None:
        self.links_lost.append(link_id)

    async def __aenter__(self) -> Self:
        await self.hub.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hub.close()
