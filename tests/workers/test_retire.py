"""Retiring after a reload (msrpd/workers/migrate/retire.py) with real TCP connections, real
fd passing and a real heartbeat table: an old worker sends every connection that can move
now to the least loaded worker of the newest generation, in one datagram under one hold of
the move lock; each handover fences first; the lock goes back after the last RELEASE and the
next batch follows at once; what cannot move stays; a target that is gone keeps nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.shm import Heartbeats, WorkerState
from msrpd.workers.handoff import Handoff, HandoffKind
from msrpd.workers.migrate.state import MigrationState, Worker, worker_token

from .migrating import Net, Side, conn_on, free_elsewhere

OLD, OLD_PEER, NEW_A, NEW_B = (0, 1), (1, 1), (0, 2), (1, 2)


class World:
    def __init__(self, run_dir: Path, hb: Heartbeats) -> None:
        self.run_dir, self.hb = run_dir, hb
        self.loop, self.idle = asyncio.new_event_loop(), asyncio.new_event_loop()
        self.net = Net(self.loop)
        for index, (slot, generation) in enumerate((OLD, OLD_PEER, NEW_A, NEW_B)):
            hb.claim(index, 100 + index, slot=slot, generation=generation)
        self.old = Side(run_dir, OLD, 0, hb, self.idle)
        self.new_a = Side(run_dir, NEW_A, 2, hb, self.idle)
        self.new_b = Side(run_dir, NEW_B, 3, hb, self.idle)
        self.retirer = self.old.built.retirer

    def states(self, **conns: int) -> None:
        self.hb.beat(0, WorkerState.DRAINING, 0)
        self.hb.beat(1, WorkerState.DRAINING, 0)
        self.hb.beat(2, WorkerState.RUNNING, conns["a"])
        self.hb.beat(3, WorkerState.RUNNING, conns["b"])

    def close(self) -> None:
        for side in (self.old, self.new_a, self.new_b):
            side.close()
        self.net.close()
        self.loop.close()
        self.idle.close()


@pytest.fixture
def world(tmp_path: Path, prefix: str) -> Iterator[World]:
    hb = Heartbeats.create(prefix, 4)
    world = World(tmp_path, hb)
    try:
        yield world
    finally:
        world.close()
        hb.region.close()
        hb.region.unlink()


def run(world: World) -> None:
    """One pass of the workers' loop: callbacks due, then what their accept sockets hold."""
    world.idle.run_until_complete(asyncio.sleep(0))
    for side in (world.new_a, world.new_b):
        side.inbox.receive()


def _ack(world: World, old: int, worker: Worker) -> None:
    world.old.handover.on_control(Handoff(HandoffKind.FENCE_ACK, old, worker_token(*worker)), None)


def test_a_batch_goes_to_the_least_loaded_new_worker_and_the_next_follows(world: World) -> None:
    world.states(a=5, b=0)
    old = world.old
    movable = [conn_on(old, world.net, serial)[0] for serial in (1, 2, 3)]
    tls, _ = conn_on(old, world.net, 4)
    tls.migration = MigrationState()  # TLS: its state is this process's
    busy, _ = conn_on(old, world.net, 5)
    busy.carry = None  # mid-frame: not now
    world.retirer.start()
    run(world)  # the first batch, from a loop callback
    assert world.retirer.moved == 3 and set(old.host.conns) == {tls.conid, busy.conid}
    served = [conn for conn, _ in world.new_b.host.served]  # the least loaded worker
    assert [c.migration.handovers for c in served] == [1, 1, 1]  # a reload's moves
    assert world.new_a.host.served == []
    # Fenced first: every other serving worker, and no MOVING before their answers.
    fences = {(w, c) for w, kind, c, _, _ in old.host.controls if kind is HandoffKind.FENCE}
    assert fences == {(w, c.conid) for w in (OLD_PEER, NEW_A) for c in movable}
    assert all(kind is HandoffKind.FENCE for _, kind, _, _, _ in old.host.controls)
    assert not free_elsewhere(world.run_dir) and old.lock.out == 3
    assert old.mover.busy() and not world.retirer.done()
    busy.carry = b""  # between frames now: it goes with the next batch
    old.host.controls.clear()
    for conn, new in zip(movable, served, strict=True):
        _ack(world, conn.conid, OLD_PEER)
        _ack(world, conn.conid, NEW_A)
        assert old.host.controls[-1] == (NEW_B, HandoffKind.MOVING, conn.conid, 0, b"")
        payload = new.conid.to_bytes(8, "big")
        old.handover.on_control(Handoff(HandoffKind.MOVED, conn.conid, 0, payload), None)
        _ack(world, conn.conid, OLD_PEER)
        _ack(world, conn.conid, NEW_A)
        assert old.host.controls[-1] == (NEW_B, HandoffKind.RELEASE, new.conid, 0, b"")
    assert old.lock.out == 0 and free_elsewhere(world.run_dir)
    run(world)  # the retirer's next batch, at once
    assert len(world.new_b.host.served) == 4
    assert set(old.host.conns) == {tls.conid} and world.retirer.moved == 4
    assert not world.retirer.done()  # the TLS connection stays until it closes


def test_a_target_that_is_gone_keeps_nothing(world: World) -> None:
    world.states(a=5, b=0)
    old = world.old
    conn, _ = conn_on(old, world.net)
    world.new_b.balancer.close()  # its accept socket is gone
    world.retirer.start()
    world.retirer.step()
    assert conn.conid in old.host.conns and world.retirer.moved == 0
    assert conn.transport is not None and conn.transport.is_reading()  # resumed
    assert free_elsewhere(world.run_dir) and not old.mover.busy()


def test_nothing_moves_without_a_newer_generation(world: World) -> None:
    world.states(a=0, b=0)
    world.hb.beat(2, WorkerState.DRAINING, 0)
    world.hb.beat(3, WorkerState.BOOTING, 0)
    conn, _ = conn_on(world.old, world.net)
    world.retirer.start()
    world.retirer.step()
    assert conn.conid in world.old.host.conns and world.retirer.moved == 0
    del world.old.host.conns[conn.conid]
    assert world.retirer.done()


def test_retiring_waits_for_a_move_out_and_goes_on_once_it_is_over(world: World) -> None:
    world.states(a=0, b=5)
    old = world.old
    first, _ = conn_on(old, world.net, 1)
    second, _ = conn_on(old, world.net, 2)
    assert old.mover.move(first, NEW_A)  # a colocation move, out when the reload comes
    world.retirer.start()
    run(world)
    assert second.conid in old.host.conns and world.retirer.moved == 0  # one at a time
    ((moved, _),) = world.new_a.host.served
    payload = moved.conid.to_bytes(8, "big")
    old.handover.on_control(Handoff(HandoffKind.MOVED, first.conid, 0, payload), None)
    _ack(world, first.conid, OLD_PEER)
    _ack(world, first.conid, NEW_B)
    assert old.host.controls[-1] == (NEW_A, HandoffKind.RELEASE, moved.conid, 0, b"")
    run(world)  # the move is over: the retirer goes on at once
    assert old.host.conns == {} and world.retirer.moved == 1
    assert len(world.new_a.host.served) == 2
