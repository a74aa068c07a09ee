"""cmap benchmark: lookups/s in one process, and with two processes contending.

Usage: .venv/bin/python scripts/bench_shm.py [--seconds S] [--entries N] [--stripes K]

Creates a cmap in shared memory (2^K stripes, N entries saved), then times lookups of random
saved session ids: first one process alone, then two forked processes at once (on this
2-core machine they contend for the same fcntl stripe locks when they hit the same stripe).
Also times saves and misses in one process. Prints lookups/s; the segments are removed after.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import tempfile
import time
from pathlib import Path

from msrpd.shm import Cmap, CmapEntry


def _attach(prefix: str, lockfile: Path, stripes: int, capacity: int) -> Cmap:
    return Cmap.attach(prefix, lockfile, stripes, capacity)


def _lookups(cmap: Cmap, keys: list[str], seconds: float) -> tuple[int, float]:
    now, rng, done = time.time(), random.Random(os.getpid()), 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for key in rng.choices(keys, k=1000):
            if cmap.lookup(key, now) is None:
                raise SystemExit(f"lost entry {key}")
        done += 1000
    return done, time.perf_counter() - started


def _child(args: tuple[str, Path, int, int, list[str], float]) -> tuple[int, float]:
    prefix, lockfile, stripes, capacity, keys, seconds = args
    cmap = _attach(prefix, lockfile, stripes, capacity)
    try:
        return _lookups(cmap, keys, seconds)
    finally:
        cmap.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--stripes", type=int, default=8, help="log2 of the stripe count")
    opts = parser.parse_args()
    stripes, capacity = 1 << opts.stripes, max(65536, opts.entries * 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shm-"))
    prefix, lockfile = f"msrpd-bench{os.getpid()}", tmp / "cmap.lock"
    cmap = Cmap.create(prefix, lockfile, stripes, capacity)
    try:
        keys = [secrets.token_urlsafe(12) for _ in range(opts.entries)]
        started = time.perf_counter()
        for i, key in enumerate(keys):
            entry = CmapEntry(
                key,
                i,
                "msrp://peer:1/x;tcp",
                "msrp://127.0.0.1:40000",
                "tcp:127.0.0.1:2855",
                time.time() + 3600,
            )
            assert cmap.save(entry)
        saves = len(keys) / (time.perf_counter() - started)
        n, t = _lookups(cmap, keys, opts.seconds)
        misses = [secrets.token_urlsafe(12) for _ in range(20000)]
        started, now = time.perf_counter(), time.time()
        for key in misses:
            cmap.lookup(key, now)
        miss_rate = len(misses) / (time.perf_counter() - started)
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            results = pool.map(
                _child, [(prefix, lockfile, stripes, capacity, keys, opts.seconds)] * 2
            )
        both = sum(n2 / t2 for n2, t2 in results)
        print(f"cmap: {opts.entries} entries, {stripes} stripes, capacity {cmap.capacity}")
        print(f"  save               {saves:>10,.0f} /s")
        print(f"  lookup, 1 process  {n / t:>10,.0f} /s")
        print(f"  lookup, 2 procs    {both:>10,.0f} /s in all ({both / 2:,.0f} each)")
        print(f"  lookup miss        {miss_rate:>10,.0f} /s")
    finally:
        cmap.close()
        cmap.unlink()


if __name__ == "__main__":
    main()
