"""HandoffHub and its HubHandler: what reaches the handler, with which link, in which order,
over real Unix sockets (uvloop and asyncio's own)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from msrpd.workers.handoff import HEADER, Handoff, HandoffKind, encode_handoff
from msrpd.workers.link import Link

from .hubs import LOOPS, Peer, run, until


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Logged(Peer):
    """A Peer that logs the order of the handler calls, and the links frames came on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.log: list[str] = []
        self.links: list[Link] = []

    def before_read(self) -> None:
        self.log.append("before")

    def after_read(self) -> None:
        self.log.append("after")

    def deliver(
        self,
        link: Link,
        conid: int,
        payload: memoryview | bytes,
        flags: int,
        source: tuple[int, int],
    ) -> bool:
        self.log.append(f"frame {conid}")
        self.links.append(link)
        assert source == (id(link), conid + 1000)
        return super().deliver(link, conid, payload, flags, source)


def test_each_kind_reaches_the_handler_with_the_link_it_came_on(
    tmp_path: Path, loop_kind: str
) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Logged(tmp_path / "b.sock") as b:
            a.hub.send(b.path, 1, 1001, [b"one"])
            a.hub.send_control(b.path, HandoffKind.MOVED, 2, 0, (7).to_bytes(8, "big"))
            a.hub.send_control(b.path, HandoffKind.FENCE, 3, 44)
            a.hub.send_close(b.path, 4)
            await until(lambda: b.closed == [4])
            (link,) = set(b.links)
            assert [(ln, m.kind, m.conid, m.token, bytes(m.payload)) for ln, m in b.control] == [
                (link, HandoffKind.MOVED, 2, 0, (7).to_bytes(8, "big")),
                (link, HandoffKind.FENCE, 3, 44, b""),
            ]
            # The owner side answers flow on the link the frames came on.
            link.send_flow(True, 1, 1001)
            link.send_flow(False, 1)
            await until(lambda: len(a.flow) == 2)
            (a_link,) = {link_id for *_, link_id in a.flow}
            assert a.flow == [(True, 1, 1001, a_link), (False, 1, 0, a_link)]
            assert a.gone == [] and a.frames == []
            await b.hub.close()
            await until(lambda: a.links_lost == [a_link])  # the same link id, once
            assert b.links_lost == [id(link)]

    run(loop_kind, main)


def test_one_reads_frames_are_dispatched_between_before_and_after(
    tmp_path: Path, loop_kind: str
) -> None:
    async def main() -> None:
        async with Logged(tmp_path / "b.sock") as b:
            reader, writer = await asyncio.open_unix_connection(str(b.path))
            wire = b"".join(
                encode_handoff(Handoff(HandoffKind.FRAME, k, 1000 + k, b"p")) for k in range(3)
            )
            writer.write(wire)
            await until(lambda: "after" in b.log)
            assert b.log == ["before", "frame 0", "frame 1", "frame 2", "after"]
            # A stream that breaks inside a read: the frames before the fault are dispatched,
            # the read still ends with after_read, and the link is closed.
            b.log.clear()
            writer.write(
                encode_handoff(Handoff(HandoffKind.FRAME, 5, 1005, b"q"))
                + HEADER.pack(200, 0, 0, 4, 2, 0)
            )
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert b.log == ["before", "frame 5", "after"]
            writer.close()
            await writer.wait_closed()

    run(loop_kind, main)


def test_what_a_read_sends_leaves_before_the_loop_moves_on(tmp_path: Path, loop_kind: str) -> None:
    """Sends made while a read is dispatched are written at the end of that read, not by a
    callback of a later loop step (latency): a callback scheduled before the send sees them
    written already."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[int] = []

        class Echo(Peer):
            def deliver(
                self,
                link: Link,
                conid: int,
                payload: memoryview | bytes,
                flags: int,
                source: tuple[int, int],
            ) -> bool:
                hub = self.hub
                loop.call_soon(lambda: seen.append(hub.stats.writes))
                hub.send(a.path, conid, 0, [bytes(payload)])
                return super().deliver(link, conid, payload, flags, source)

        async with Peer(tmp_path / "a.sock") as a, Echo(tmp_path / "b.sock") as b:
            a.hub.send(b.path, 1, 1, [b"ping"])  # b's link to a connects meanwhile
            await until(lambda: a.frames == [(1, b"ping", 0)])
            seen.clear()
            writes = b.hub.stats.writes
            a.hub.send(b.path, 2, 2, [b"x"])
            await until(lambda: len(a.frames) == 2)
            assert seen == [writes + 1]
            a.hub.send(b.path, 3, 3, [b"y"])
            a.hub.send(b.path, 4, 4, [b"z"])  # one read on b: both echoes in one write
            await until(lambda: len(a.frames) == 4)
            assert seen == [writes + 1, writes + 2, writes + 2]
            assert b.hub.stats.writes == writes + 2
            assert a.frames[1:] == [(2, b"x", 0), (3, b"y", 0), (4, b"z", 0)]

    run(loop_kind, main)


def test_a_hub_whose_stop_gave_up_answers_gone_without_asking_the_handler(
    tmp_path: Path, loop_kind: str
) -> None:
    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Logged(tmp_path / "b.sock") as b:
            b.hub.stop.given_up = True  # its worker delivers nothing more (stopping.py)
            a.hub.send(b.path, 6, 1006, [b"late"])
            await until(lambda: a.gone == [(6, 1006)])
            assert b.frames == [] and "frame 6" not in b.log
            assert b.hub.stats.gone_sent == 1

    run(loop_kind, main)


@pytest.mark.parametrize("stopping", [True, False])
def test_a_peers_eof_means_done_sending_only_while_the_hubs_stop_is_stopping(
    tmp_path: Path, loop_kind: str, stopping: bool
) -> None:
    """The hub reads its worker's StopState: in a graceful stop a peer's EOF means "done
    sending" and the link still carries our answers (a GONE for what we will not write);
    otherwise the peer is gone."""

    async def main() -> None:
        async with Peer(tmp_path / "a.sock") as a, Logged(tmp_path / "b.sock") as b:
            b.hub.stop.stopping = stopping
            a.hub.send(b.path, 1, 1001, [b"x"])
            await until(lambda: len(b.frames) == 1)
            (link,) = b.links
            a.hub.finish_sending()
            if stopping:
                await until(lambda: link.peer_done)
                assert b.links_lost == []
                b.hub.refuse((id(link), 1001), 1)
                await until(lambda: a.gone == [(1, 1001)])
                assert not b.hub.settle()  # shuts the done link down
                await until(b.hub.settle)
            else:
                await until(lambda: b.links_lost == [id(link)])
                assert not link.peer_done

    run(loop_kind, main)
