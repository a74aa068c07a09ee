"""StripedTable: operations, limits, a dict model under Hypothesis, and crash recovery."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import signal
import struct
import sys
import zlib
from collections.abc import Callable
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrpd.hotpath import PURE_ENV
from msrpd.shm import ShmLayoutError, StripedTable, TableGeometry, stripes
from msrpd.shm.stripes import BUSY, stripe_header

TAG = b"test/1"
FIRST = struct.Struct("<B")  # the first value byte, for remove_where predicates


def shape(stripes: int, capacity: int) -> TableGeometry:
    return TableGeometry.for_capacity(stripes, capacity, key_max=16, value_size=4)


def make(prefix: str, tmp_path: Path, name: str, stripes: int, capacity: int) -> StripedTable:
    return StripedTable.create(
        f"{prefix}-{name}", tmp_path / f"{name}.lock", shape(stripes, capacity), TAG
    )


def find_keys(t: StripedTable, want: Callable[[int, int], bool], n: int) -> list[bytes]:
    out: list[bytes] = []
    for i in itertools.count():
        key = b"k%d" % i
        if want(*t.place(key)):
            out.append(key)
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def contents(t: StripedTable) -> dict[bytes, bytes]:
    return {k: v for s in range(t.n_stripes) for k, v in t.items(s)}


def test_put_get_replace_delete(prefix: str, tmp_path: Path) -> None:
    t = make(prefix, tmp_path, "t", 4, 64)
    try:
        assert t.get(b"a") is None
        assert t.put(b"a", b"1111")
        assert t.put(b"b", b"2222")
        assert t.get(b"a") == b"1111"
        assert t.put(b"a", b"3333")  # replace
        assert t.get(b"a") == b"3333"
        assert t.count() == 2
        assert t.delete(b"a")
        assert not t.delete(b"a")
        assert t.get(b"a") is None
        assert t.get(b"b") == b"2222"
        assert t.count() == 1
        assert t.put(b"", b"0000")  # the empty key is a key like any other
        assert t.get(b"") == b"0000"
        assert t.verify() == []
        with pytest.raises(ValueError, match="value must be 4 bytes"):
            t.put(b"x", b"12345")
    finally:
        t.close()
        t.unlink()


def test_long_keys_are_refused_not_raised(prefix: str, tmp_path: Path) -> None:
    t = make(prefix, tmp_path, "t", 1, 8)
    try:
        assert t.put(b"x" * 16, b"1234")
        assert t.get(b"x" * 16) == b"1234"
        assert not t.put(b"x" * 17, b"1234")
        assert t.get(b"x" * 17) is None
        assert not t.delete(b"x" * 17)
        assert t.count() == 1
    finally:
        t.close()
        t.unlink()


def test_full_stripe_refuses_and_evicts_nothing(prefix: str, tmp_path: Path) -> None:
    t = make(prefix, tmp_path, "t", 4, 16)  # 4 slots per stripe
    try:
        assert t.geometry.slots_per_stripe == 4
        same = find_keys(t, lambda stripe, home: stripe == 2, 5)
        for i, key in enumerate(same[:4]):
            assert t.put(key, b"v%03d" % i)
        other = find_keys(t, lambda stripe, home: stripe == 1, 1)[0]
        assert not t.put(same[4], b"new!")  # stripe 2 is full
        assert t.put(other, b"othr")  # another stripe still has room
        assert t.put(same[0], b"repl")  # replacing needs no free slot
        assert t.get(same[4]) is None
        assert contents(t) == {
            same[0]: b"repl",
            same[1]: b"v001",
            same[2]: b"v002",
            same[3]: b"v003",
            other: b"othr",
        }
        assert t.delete(same[1])
        assert t.put(same[4], b"new!")
        assert t.verify() == []
    finally:
        t.close()
        t.unlink()


def test_attach_checks_geometry(prefix: str, tmp_path: Path) -> None:
    t = make(prefix, tmp_path, "t", 4, 16)
    try:
        t.put(b"a", b"1234")
        same = TableGeometry.for_capacity(4, 13, key_max=16, value_size=4)  # rounds to 16
        u = StripedTable.attach(f"{prefix}-t", tmp_path / "t.lock", same, TAG)
        assert u.get(b"a") == b"1234"
        u.close()
        for geometry in (
            TableGeometry.for_capacity(8, 16, key_max=16, value_size=4),
            TableGeometry(4, 4, key_max=15, value_size=5),  # same record and region size
        ):
            with pytest.raises(ShmLayoutError):
                StripedTable.attach(f"{prefix}-t", tmp_path / "t.lock", geometry, TAG)
        with pytest.raises(ShmLayoutError, match="layout tag"):
            StripedTable.attach(f"{prefix}-t", tmp_path / "t.lock", same, b"test/2")
    finally:
        t.close()
        t.unlink()


def test_geometry_rounding_and_limits() -> None:
    g = TableGeometry.for_capacity(8, 100, key_max=64, value_size=468)
    assert (g.slots_per_stripe, g.capacity, g.record_size) == (13, 104, 544)
    assert TableGeometry.for_capacity(65536, 1, 8, 8).capacity == 65536
    for bad in ((3, 10, 8, 8), (4, 0, 8, 8), (4, 10, 0, 8), (4, 10, 70000, 8)):
        with pytest.raises(ValueError):
            TableGeometry.for_capacity(*bad)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "get", "delete", "delete_if", "sweep"]),
        st.integers(0, 23),  # key index: 24 keys into 16 slots, so stripes fill up
        st.integers(0, 255),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, stripes=st.sampled_from([1, 2, 4]))
def test_matches_a_dict_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]], stripes: int
) -> None:
    tmp = tmp_path_factory.mktemp("model")
    from msrpd.shm import instance_prefix, unlink_stale

    prefix = instance_prefix(tmp)
    t = make(prefix, tmp, "t", stripes, 16)
    model: dict[bytes, bytes] = {}
    try:
        for op, k, b in ops:
            key = b"key-%d" % k
            value = bytes([b, k, 0, 1])
            if op == "put":
                stored = t.put(key, value)
                stripe = t.place(key)[0]
                in_stripe = sum(1 for m in model if t.place(m)[0] == stripe)
                full = in_stripe == t.geometry.slots_per_stripe and key not in model
                assert stored == (not full)
                if stored:
                    model[key] = value
            elif op == "get":
                assert t.get(key) == model.get(key)
            elif op == "delete":
                assert t.delete(key) == (key in model)
                model.pop(key, None)
            elif op == "delete_if":  # delete only if the stored first byte is even
                match = key in model and model[key][0] % 2 == 0
                assert t.delete(key, FIRST, lambda head: head[0] % 2 == 0) == match
                if match:
                    del model[key]
            else:  # sweep one stripe: remove values whose first byte is below b
                stripe = k % stripes
                gone = [m for m in model if t.place(m)[0] == stripe and model[m][0] < b]
                assert t.remove_where(stripe, FIRST, functools.partial(_below, b)) == len(gone)
                for m in gone:
                    del model[m]
            assert t.count() == len(model)
        assert contents(t) == model
        assert t.verify() == []
    finally:
        t.close()
        unlink_stale(f"{prefix}-")


def _below(limit: int, head: tuple[int, ...]) -> bool:
    return head[0] < limit


# -- crash recovery ------------------------------------------------------------------------


def _kill_after_lines(n: int) -> None:
    """Trace this process; SIGKILL it at the n-th line run in stripes.py, where every change
    to a stripe is made (with its lock held)."""
    seen = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == stripes.__file__ else None

    sys.settrace(tracer)


def _wrapped_run(t: StripedTable) -> tuple[dict[bytes, bytes], list[bytes]]:
    """Fill a 1-stripe, 16-slot table with a run from slot 13 that wraps to slot 3."""
    homes = [13, 13, 14, 15, 0, 0, 1, 5, 6, 6, 8]
    model: dict[bytes, bytes] = {}
    order: list[bytes] = []
    for home in homes:
        key = next(
            b"k%d" % i
            for i in itertools.count()
            if t.place(b"k%d" % i)[1] == home and b"k%d" % i not in model
        )
        model[key] = bytes([len(model), 0, 0, 0])
        assert t.put(key, model[key])
        order.append(key)
    return model, order


CrashOp = Callable[[StripedTable, list[bytes]], object]
CRASH_OPS: dict[str, CrashOp] = {
    "delete-wrapping-shift": lambda t, keys: t.delete(keys[0]),
    "insert": lambda t, keys: t.put(b"fresh", b"new!"),
    "replace": lambda t, keys: t.put(keys[3], b"new!"),
    "remove-where": lambda t, keys: t.remove_where(0, FIRST, lambda head: head[0] % 3 == 0),
}


@pytest.fixture(scope="module")
def lean() -> ForkServerContext:
    """Where the sweep's writers come from: forked by a small server process that imported
    this module, not by pytest. A fork costs in proportion to the forker's memory, and pytest's
    grows over a full run (40 to 80 ms a fork late in one, against 3 ms here): the sweeps fork
    some 450 writers."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    # The sweep traces stripes.py's lines: its writers run the Python source even where the
    # hot path is compiled (MSRPD_PURE, msrpd/hotpath.py), and the server's environment is
    # what they inherit.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PURE_ENV, "1")
        forkserver.ensure_running()
    return context


def _run_writer(lean: ForkServerContext, *args: object) -> int:
    """_crash_child(*args) in a fresh writer: its exit code, or -signal."""
    writer = lean.Process(target=_crash_child, args=args)
    writer.start()
    writer.join(30)
    try:
        if writer.exitcode is None:
            writer.kill()
            writer.join()
            raise TimeoutError(f"writer {writer.pid} still running after 30 s")
        return writer.exitcode
    finally:
        writer.close()


@pytest.mark.parametrize("name", sorted(CRASH_OPS))
def test_sigkill_at_every_line_leaves_a_valid_table(
    prefix: str, tmp_path: Path, lean: ForkServerContext, name: str
) -> None:
    """A writer killed at any line of a critical section: the next user repairs the stripe.

    Allowed results: every key the operation does not touch is exact; a touched key holds its
    old value, its new value, or (for a replace, whose slot is discarded) nothing.
    """
    for n in itertools.count(1):
        t = make(prefix, tmp_path, f"c{n}", 1, 16)
        try:
            model, keys = _wrapped_run(t)
            lockfile = tmp_path / f"c{n}.lock"
            status = _run_writer(lean, name, keys, n, t.region.name, lockfile)
            assert t.verify() == []
            _check_crash_result(name, model, keys, contents(t))
            assert t.count() == len(contents(t))
        finally:
            t.close()
            t.unlink()
        if status == 0:
            print(f"{name}: killed at each of {n - 1} lines")
            break
        assert status == -signal.SIGKILL
    assert n > 5  # the sweep really went through the critical section


def _crash_child(op: str, keys: list[bytes], n: int, name: str, lockfile: Path) -> None:
    assert stripes.__file__.endswith(".py"), "the sweep traces stripes.py's source lines"
    u = StripedTable.attach(name, lockfile, shape(1, 16), TAG)
    _kill_after_lines(n)
    CRASH_OPS[op](u, keys)


def _check_crash_result(
    name: str, model: dict[bytes, bytes], keys: list[bytes], got: dict[bytes, bytes]
) -> None:
    touched = {
        "delete-wrapping-shift": {keys[0]: [model[keys[0]], None]},
        "insert": {b"fresh": [None, b"new!"]},
        "replace": {keys[3]: [model[keys[3]], b"new!", None]},
        "remove-where": {k: [v, None] for k, v in model.items() if v[0] % 3 == 0},
    }[name]
    for key in set(model) | set(got) | set(touched):
        if key in touched:
            assert got.get(key) in touched[key], (name, key)
        else:
            assert got.get(key) == model[key], (name, key)


@pytest.mark.parametrize("where", ["empty-slot", "used-slot"])
def test_torn_record_in_busy_slot_is_discarded(prefix: str, tmp_path: Path, where: str) -> None:
    """A writer killed inside a memcpy leaves garbage in slot busy - 1; repair drops it."""
    t = make(prefix, tmp_path, "t", 1, 16)
    try:
        model, keys = _wrapped_run(t)
        buf, base, size = t.stripes.buf, t.stripes.base(0), t.geometry.record_size
        if where == "used-slot":
            off = t.stripes.find(0, zlib.crc32(keys[3]), keys[3])
            del model[keys[3]]
        else:
            off = next(base + i * size for i in range(16) if not buf[base + i * size])
        with t.locks.held(0):
            BUSY.pack_into(buf, stripe_header(0) + 4, (off - base) // size + 1)
            buf[off : off + size] = b"\x01" + os.urandom(size - 1)
        assert contents(t) == model
        assert t.verify() == []
    finally:
        t.close()
        t.unlink()
