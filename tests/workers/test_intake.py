"""Intake (msrpd/workers/intake.py) over a real TcpWire on 127.0.0.1: congested destinations
pause reading until the last one drains, and head_timeout's clock (slowloris)."""

from __future__ import annotations

import asyncio
import time

import pytest

from msrpd.protocol import FrameReader
from msrpd.workers.batch import WriteBatch
from msrpd.workers.intake import Intake
from msrpd.workers.stopstate import StopState
from msrpd.workers.transports.tcp import TcpWire

from .hubs import LOOPS, run, until


class Side(asyncio.Protocol):
    def __init__(self, wire: TcpWire, reader: FrameReader) -> None:
        self.wire = wire
        self.reader = reader
        self.got = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.wire.attach(transport, self.got.extend, 1 << 20, lambda tid, written: None)

    def data_received(self, data: bytes) -> None:
        self.wire.receive(data)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_reading_pauses_until_every_destination_drains(loop_kind: str) -> None:
    async def main() -> None:
        wire, reader = TcpWire(), FrameReader()
        batch = WriteBatch(asyncio.get_running_loop(), None)
        intake, side = Intake(wire, reader, batch, StopState()), Side(wire, reader)
        server = await asyncio.get_running_loop().create_server(lambda: side, "127.0.0.1", 0)
        _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        await until(lambda: wire.transport is not None)
        intake.block("bob", pause=True)
        intake.block("link", pause=True)
        writer.write(b"one")
        await asyncio.sleep(0.1)
        assert side.got == b""  # paused: the bytes wait in the kernel
        intake.unblock("bob", resume=True)
        await asyncio.sleep(0.1)
        assert side.got == b"" and intake.blockers == {"link"}
        before = time.monotonic()
        intake.unblock("link", resume=True)
        await until(lambda: side.got == b"one")
        assert intake.since >= before  # paused is not slow: head_timeout starts again
        intake.block("bob", pause=True)
        intake.unblock("bob", resume=False)  # e.g. a graceful stop: no new frame is read
        writer.write(b"two")
        await asyncio.sleep(0.1)
        assert side.got == b"one" and not intake.blockers
        wire.abort()
        writer.close()
        server.close()

    run(loop_kind, main)


def test_a_head_is_overdue_only_while_it_is_the_same_head_and_reading() -> None:
    reader, loop = FrameReader(), asyncio.new_event_loop()
    loop.close()  # the write batch is never used here
    intake = Intake(TcpWire(), reader, WriteBatch(loop, None), StopState())
    reader.receive_data(b"MSRP a1 SEND\r\nTo-Path: msrp://b")  # a head, never finished
    list(reader.events())
    assert reader.in_head
    intake.serial, intake.since = reader.head_serial, 100.0  # as conn.py notes after a read
    assert intake.overdue(began_before=101.0)
    assert not intake.overdue(began_before=99.0)  # not that old yet
    intake.block("dest", pause=False)
    assert not intake.overdue(began_before=101.0)  # paused by back-pressure: not its fault
    intake.unblock("dest", resume=False)
    intake.serial += 1  # another head than the one the clock started for
    assert not intake.overdue(began_before=101.0)
