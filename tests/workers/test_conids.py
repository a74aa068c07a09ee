"""Connection-id serials (msrpd/workers/conids.py): reserved in blocks, published before use,
and never handed out twice by one (slot, generation), even across a SIGKILL (issue 12)."""

from __future__ import annotations

import os
import signal
import struct
from types import SimpleNamespace
from typing import Any, cast

import pytest

from msrpd.config import load_config
from msrpd.shm import Heartbeats
from msrpd.workers.conids import FIRST_SERIAL, SerialBlocks
from msrpd.workers.context import WorkerContext, WorkerIdentity
from msrpd.workers.handoff import conid_owner, conid_serial

from ..forking import Children

_SERIAL = struct.Struct("=Q")


def test_serials_are_consecutive_and_each_block_is_published_before_use() -> None:
    events: list[tuple[str, int]] = []
    blocks = SerialBlocks(10, lambda mark: events.append(("mark", mark)), block=4)
    for _ in range(9):
        events.append(("use", blocks.take()))
    assert events == [
        ("mark", 14),
        ("use", 10), ("use", 11), ("use", 12), ("use", 13),
        ("mark", 18),
        ("use", 14), ("use", 15), ("use", 16), ("use", 17),
        ("mark", 22),
        ("use", 18),
    ]  # fmt: skip
    assert blocks.mark == 22


@pytest.mark.parametrize("used", [0, 1, 3, 4, 5, 9])
def test_a_successor_started_at_the_mark_never_repeats_a_serial(used: int) -> None:
    marks = [FIRST_SERIAL]  # the supervisor's start value, as before a fork
    dead = SerialBlocks(FIRST_SERIAL, marks.append, block=4)
    taken = {dead.take() for _ in range(used)}
    successor = SerialBlocks(marks[-1], marks.append, block=4)
    again = {successor.take() for _ in range(10)}
    assert min(again) > max(taken, default=FIRST_SERIAL - 1)


def test_the_forty_serial_bits_run_out_with_an_error_not_a_wrap() -> None:
    marks: list[int] = []
    blocks = SerialBlocks((1 << 40) - 2, marks.append, block=4)
    assert [blocks.take(), blocks.take()] == [(1 << 40) - 2, (1 << 40) - 1]
    assert marks == [1 << 40]
    with pytest.raises(OverflowError):
        blocks.take()
    with pytest.raises(ValueError):
        SerialBlocks(1 << 40, marks.append)


def test_a_worker_killed_while_taking_ids_leaves_a_mark_above_all_it_used(
    prefix: str, children: Children
) -> None:
    """A real child takes connection ids flat out through WorkerContext.new_conid and
    reports each on a pipe once it has it; SIGKILLed mid-stream, its heartbeat record's mark
    is above every id it reported, and a successor started there repeats none."""
    hb = Heartbeats.create(prefix, 4)
    read_fd, write_fd = os.pipe()
    try:
        hb.reserve_serials(2, 7)  # the supervisor, before fork

        def worker() -> None:
            mine = Heartbeats.attach(prefix, 4)
            ctx = context(mine, first=7)
            os.close(read_fd)
            while True:
                os.write(write_fd, _SERIAL.pack(ctx.new_conid()))

        pid = children.fork(worker)
        os.close(write_fd)
        seen = b""
        while len(seen) < 8 * 5000:
            seen += os.read(read_fd, 1 << 16)
        os.kill(pid, signal.SIGKILL)
        children.wait(pid)
        while chunk := os.read(read_fd, 1 << 16):
            seen += chunk
        conids = [c for (c,) in _SERIAL.iter_unpack(seen[: len(seen) // 8 * 8])]
        assert {conid_owner(c) for c in conids} == {(3, 5)}
        serials = [conid_serial(c) for c in conids]
        assert serials == list(range(7, 7 + len(serials)))
        mark = hb.serial_mark(2)
        assert mark > serials[-1]
        successor = context(hb, first=mark)
        assert conid_serial(successor.new_conid()) == mark
        hb.release(2)
        assert hb.serial_mark(2) == 0
    finally:
        os.close(read_fd)
        hb.close()
        hb.unlink()


def context(heartbeats: Heartbeats, first: int) -> WorkerContext:
    none = cast(Any, None)
    shm = cast(Any, SimpleNamespace(heartbeats=heartbeats))
    ident = WorkerIdentity(3, 5, 2, first)
    return WorkerContext(load_config(None), ident, shm, none)
