"""Link: one handoff link's byte stream, write batching and flow control, over a real Unix
socketpair (uvloop and asyncio's own). The far end is a plain socket; the link's owner records
what the link tells it and flushes as a hub would."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from msrpd.workers.handoff import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    Handoff,
    HandoffDecoder,
    HandoffKind,
    encode_handoff,
)
from msrpd.workers.link import HandoffStats, Link
from msrpd.workers.linkqueue import Tracked

from .hubs import LOOPS, run, until

MiB = 1 << 20


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Owner:
    """What a hub does for its links, recorded: flush once per loop iteration (unless told
    not to: then what is queued stays queued)."""

    def __init__(self, flush: bool = True) -> None:
        self.flush = flush
        self.stats = HandoffStats()
        self.stopping = False
        self.scheduled = 0
        self.messages: list[Handoff] = []
        self.adopted: list[Link] = []
        self.forgotten: list[Link] = []
        self.failed: list[Tracked] = []

    def schedule(self, link: Link) -> None:
        self.scheduled += 1
        if self.flush:
            asyncio.get_running_loop().call_soon(link.flush)

    def received(self, link: Link, messages: list[Handoff], error: str | None) -> None:
        assert error is None
        self.messages.extend(messages)

    def adopt(self, link: Link) -> None:
        self.adopted.append(link)

    def forget(self, link: Link) -> None:
        self.forgotten.append(link)

    def lost(self, link: Link, failed: list[Tracked]) -> None:
        self.failed.extend(failed)


def frame(conid: int, token: int, payload: bytes) -> bytes:
    return HEADER.pack(HandoffKind.FRAME, 0, 0, conid, token, len(payload))


async def linked(owner: Owner, dest: Path | None = Path("peer.sock")) -> tuple[Link, socket.socket]:
    """A link on one end of a socketpair, and the other end (non-blocking)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setblocking(False)
    link = Link(owner, dest, loop, DEFAULT_MAX_PAYLOAD)
    await loop.create_unix_connection(lambda: link, sock=ours)
    await asyncio.sleep(0)  # the flush connection_made scheduled (nothing queued yet)
    return link, theirs


async def read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, min(n - len(data), MiB)), 10)
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def go(loop_kind: str, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    run(loop_kind, test)


def test_one_iterations_messages_leave_in_order_in_one_write(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        scheduled = owner.scheduled
        link.push(frame(1, 10, b"abcdef"), [b"abc", memoryview(b"def")], 6, 1, 10)
        gone = HEADER.pack(HandoffKind.GONE, 0, 0, 5, 50, 0)
        link.push_reply(gone)
        link.push(frame(2, 20, b"xyz"), [b"xyz"], 3, 2, 20)
        assert owner.scheduled == scheduled + 1  # one flush for the whole batch
        assert link.pending_bytes() == 3 * HEADER.size + 9
        expected = frame(1, 10, b"abcdef") + b"abcdef" + gone + frame(2, 20, b"xyz") + b"xyz"
        assert await read_exactly(theirs, len(expected)) == expected
        assert (owner.stats.writes, owner.stats.sent) == (1, 2)  # replies are not counted
        assert link.pending_bytes() == 0
        link.shutdown()
        await link.lost
        assert owner.failed == []  # everything reached the kernel
        theirs.close()

    go(loop_kind, main)


def test_a_full_kernel_pauses_the_link_and_the_queue_leaves_in_one_write_after(
    loop_kind: str,
) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        big = b"b" * MiB
        for k in range(8):
            link.push(frame(k, k, big), [big], MiB, k, k)
        await until(lambda: owner.stats.writes == 1)
        drained: list[int] = []
        link.when_drained(lambda: drained.append(link.pending_bytes()))
        assert link.pending_bytes() > 4 * MiB  # the kernel holds far less than 8 MiB
        link.push(frame(99, 99, b"tail"), [b"tail"], 4, 99, 99)
        link.send_flow(True, 7, 3)
        await asyncio.sleep(0.05)
        assert owner.stats.writes == 1  # paused: what comes now queues
        assert not drained
        expected = b"".join(frame(k, k, big) + big for k in range(8))
        expected += frame(99, 99, b"tail") + b"tail"
        expected += HEADER.pack(HandoffKind.PAUSE, 0, 0, 7, 3, 0)
        assert await read_exactly(theirs, len(expected)) == expected
        await until(lambda: bool(drained))
        assert drained == [0]  # called once nothing was left
        assert owner.stats.writes == 2  # the tail and the PAUSE went in one write
        link.shutdown()
        await link.lost
        assert owner.failed == []
        theirs.close()

    go(loop_kind, main)


def test_a_broken_link_reports_every_tracked_message_not_in_the_kernel(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        big = b"c" * MiB
        for k in range(6):
            link.push(frame(k, 100 + k, big), [big], MiB, k, 100 + k)
        await until(lambda: owner.stats.writes == 1)
        link.push_reply(HEADER.pack(HandoffKind.GONE, 0, 0, 9, 9, 0))  # untracked
        link.push(frame(6, 106, b""), [], 0, 6, 106)  # queued behind, never written
        released: list[int] = []
        link.when_drained(lambda: released.append(1))
        theirs.close()  # the peer drops the link
        await asyncio.wait_for(link.lost, 10)
        tokens = [token for _end, _conid, token in owner.failed]
        assert tokens == list(range(tokens[0], 107))  # a suffix, in order, each once
        assert tokens[0] <= 101  # most of 6 MiB was still in the transport
        assert [conid for _end, conid, _token in owner.failed] == [t - 100 for t in tokens]
        assert owner.forgotten == []  # the transport broke; it did not close on request
        assert released == [1]  # waiting senders are let go
        assert link.pending_bytes() == 0

    go(loop_kind, main)


def test_reading_stays_paused_while_any_blocker_holds_it(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        link.block("x")
        link.block("y")
        theirs.send(encode_handoff(Handoff(HandoffKind.FRAME, 1, 2, b"hi")))
        await asyncio.sleep(0.1)
        assert owner.messages == []
        link.unblock("x")
        await asyncio.sleep(0.1)
        assert owner.messages == []  # "y" still holds it
        link.unblock_all()
        await until(lambda: bool(owner.messages))
        assert [(m.kind, m.conid, m.token, bytes(m.payload)) for m in owner.messages] == [
            (HandoffKind.FRAME, 1, 2, b"hi")
        ]
        link.shutdown()
        await link.lost
        theirs.close()

    go(loop_kind, main)


def test_an_accepted_link_of_a_stopping_hub_outlives_the_peers_eof(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        owner.stopping = True
        link, theirs = await linked(owner, dest=None)
        assert owner.adopted == [link]
        theirs.send(encode_handoff(Handoff(HandoffKind.FRAME, 3, 4, b"last")))
        theirs.shutdown(socket.SHUT_WR)  # finish_sending on the peer's side
        await until(lambda: link.peer_done)
        assert [m.conid for m in owner.messages] == [3]
        gone = HEADER.pack(HandoffKind.GONE, 0, 0, 3, 4, 0)
        link.push_reply(gone)  # our answer still goes back
        assert await read_exactly(theirs, len(gone)) == gone
        assert not link.lost.done()
        link.shutdown()
        await link.lost
        assert owner.forgotten == [link]
        theirs.close()

    go(loop_kind, main)


def test_a_peers_eof_otherwise_fails_what_is_queued(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner(flush=False)
        link, theirs = await linked(owner, dest=None)
        link.push(frame(5, 55, b"late"), [b"late"], 4, 5, 55)  # stays queued
        theirs.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(link.lost, 10)
        assert owner.forgotten == [link]
        assert [t[1:] for t in owner.failed] == [(5, 55)]
        assert not link.peer_done
        theirs.close()

    go(loop_kind, main)


def test_finish_sending_half_closes_only_once_everything_left(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        big = b"d" * MiB
        for k in range(4):
            link.push(frame(k, k, big), [big], MiB, k, k)
        await until(lambda: owner.stats.writes == 1)
        assert not link.finish_sending()  # bytes still in the transport
        expected = b"".join(frame(k, k, big) + big for k in range(4))
        assert await read_exactly(theirs, len(expected)) == expected
        await until(lambda: link.pending_bytes() == 0)
        assert link.finish_sending()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(theirs, 10), 10) == b""  # EOF
        theirs.close()
        await asyncio.wait_for(link.lost, 10)
        assert owner.failed == []

    go(loop_kind, main)


def test_flow_messages_are_not_sent_on_a_closing_link(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        link.send_flow(False, 8)
        resume = HEADER.pack(HandoffKind.RESUME, 0, 0, 8, 0, 0)
        assert await read_exactly(theirs, len(resume)) == resume
        link.shutdown()
        link.send_flow(True, 8, 1)
        await link.lost
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(theirs, 100), 10) == b""
        theirs.close()

    go(loop_kind, main)


def test_a_link_that_cannot_connect_fails_what_was_queued(loop_kind: str, tmp_path: Path) -> None:
    async def main() -> None:
        owner = Owner()
        loop = asyncio.get_running_loop()
        dest = tmp_path / "nobody.sock"
        link = Link(owner, dest, loop, DEFAULT_MAX_PAYLOAD)
        link.push(frame(1, 11, b"a"), [b"a"], 1, 1, 11)
        link.push(frame(2, 12, b""), [], 0, 2, 12)
        assert owner.scheduled == 0  # nothing is scheduled before the link connects
        link.task = loop.create_task(link.connect(loop, dest))
        await asyncio.wait_for(link.lost, 10)
        assert [t[1:] for t in owner.failed] == [(1, 11), (2, 12)]

    go(loop_kind, main)


def test_decode_hands_back_the_messages_a_read_completes(loop_kind: str) -> None:
    async def main() -> None:
        owner = Owner()
        link, theirs = await linked(owner)
        wire = encode_handoff(Handoff(HandoffKind.FRAME, 1, 1, b"x" * 100))
        wire += encode_handoff(Handoff(HandoffKind.CLOSE, 2, 0))
        for cut in (7, 60, len(wire)):  # whatever the split, the same messages
            owner.messages.clear()
            link.block("split")
            theirs.send(wire[:cut])
            link.unblock("split")
            await asyncio.sleep(0.05)
            theirs.send(wire[cut:])
            await until(lambda: len(owner.messages) == 2)
            assert owner.messages == HandoffDecoder().feed(wire)
        link.shutdown()
        await link.lost
        theirs.close()

    go(loop_kind, main)
