"""The parent's side: fork the generator processes, start them together, time the window.

The relay's CPU is read with psutil over the same window the generators count frames in;
each generator reports its own CPU (time.process_time) over that window, so a saturated
generator shows up in the output instead of passing for a slow relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import shutil
import subprocess
import sys
import time
import traceback
from array import array
from collections import Counter
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import uvloop

from . import callgrind, kernel
from .cluster import MsrpdCluster
from .drivers import DRIVERS, Job, MiB
from .relays import MachineCpu, Msrpd, Relay


def raise_nofile() -> int:
    """Soft fd limit up to the hard limit (this process and what it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child(pipe: Connection, job: Job) -> None:
    raise_nofile()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        driver = DRIVERS[job.mode](job)
        pipe.send(("ready", loop.run_until_complete(driver.setup())))
        kind, t0 = pipe.recv()
        if kind == "go":
            result = loop.run_until_complete(driver.run(t0, pipe))
            if "lat" in result:
                result["lat"] = array("q", result["lat"]).tobytes()
            pipe.send(("result", result))
    except Exception:
        pipe.send(("error", traceback.format_exc()))


def split(items: list[int], parts: int) -> list[list[int]]:
    return [s for s in (items[i::parts] for i in range(parts)) if s]


class Generators:
    """The generator processes of one run; each gets `job` with its own share."""

    def __init__(self, job: Job, shares: list[list[int]]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for share in shares:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_child, args=(theirs, replace(job, share=share)))
            proc.daemon = True
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def gather(self, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        out = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a generator process did not answer in time")
            kind, payload = pipe.recv()
            if kind == "error":
                raise RuntimeError(f"generator failed:\n{payload}")
            out.append(payload)
        return out

    def go(self, t0: float, kind: str = "go") -> None:
        """Start at `t0` (or, with another `kind`, the next step of a driver that waits)."""
        for pipe in self.pipes:
            pipe.send((kind, t0))

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # our own child, by its pid
                proc.join(5)


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


def cross_worker(relay: Relay, infos: list[dict[str, Any]]) -> str:
    """msrpd: how many pairs have Alice and Bob on different workers (their frames then go
    over the handoff link), as "n/pairs", and the connections of each worker ("(4+4)");
    "" for Kamailio, whose tcp_main owns every socket. Measured after connecting and again at
    the end of the measured window."""
    if not isinstance(relay, Msrpd):
        return ""
    owner: dict[int, int] = {}
    for pid in relay.worker_pids():
        with contextlib.suppress(psutil.Error):
            for c in psutil.Process(pid).net_connections(kind="tcp"):
                if c.raddr:
                    owner[c.raddr.port] = pid
    pairs = [tuple(p) for info in infos for p in info["ports"]]
    cross = sum(1 for a, b in pairs if owner.get(a) != owner.get(b))
    ours = {port for pair in pairs for port in pair}
    split = "+".join(
        str(sum(1 for port, pid in owner.items() if pid == worker and port in ours))
        for worker in sorted(set(owner.values()))
    )
    return f"{cross}/{len(pairs)} ({split})"


def job_for(relay: Relay, opts: Any, mode: str, **kw: Any) -> Job:
    """A Job aimed at `relay`: Alice on its TCP port, Bob where it takes AUTH (over TLS for
    msrpd's relay route), Bob answering SENDs when --bob-answers."""
    return Job(
        mode,
        relay.port,
        relay.auth_uri,
        auth_port=relay.auth_port,
        tls_ca=relay.tls_ca,
        answer=bool(getattr(opts, "bob_answers", False)),
        nodes=relay.auth_nodes,
        **kw,
    )


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def flood(
    relay: Relay, opts: Any, size: int, rate: float = 0.0, window_by: str = ""
) -> dict[str, Any]:
    """flood (rate == 0) or fixed rate (total frames/s) with `size`-byte bodies; a flood's
    window counts Alice's responses or Bob's receipts (`window_by`, default --window-by)."""
    pairs = opts.pairs
    mode = "rate" if rate else "flood"
    window_by = window_by or getattr(opts, "window_by", "replies")
    job = job_for(relay, opts, mode, size=size, window=opts.window, window_by=window_by)
    job = replace(job, seconds=opts.seconds, warmup=opts.warmup, rate=rate / pairs)
    users = [f"bob{n}" for n in range(pairs)]
    relay.add_users(users + [f"alice{n}" for n in range(pairs)] if job.nodes else users)
    if opts.alice_ws:
        job = replace(job, alice_ws=relay.ws_port)
    gens = Generators(job, split(list(range(pairs)), opts.procs))
    profilers: list[tuple[int, Path, subprocess.Popen[bytes]]] = []
    try:
        infos = gens.gather(120)
        cross = cross_worker(relay, infos)
        t0 = time.monotonic() + 0.3
        gens.go(t0)
        sleep_until(t0 + opts.warmup)
        u0, m0 = relay.usage(), MachineCpu()
        if opts.profile and isinstance(relay, Msrpd) and not rate:
            profilers = start_profilers(relay, opts, size)
        counted = relay.worker_pids() if getattr(opts, "callgrind", None) else []
        if counted:
            callgrind.start(counted, Path(opts.callgrind))
        sleep_until(t0 + opts.warmup + opts.seconds)
        instructions = callgrind.dump(counted, Path(opts.callgrind)) if counted else 0
        u1, m1 = relay.usage(), MachineCpu()
        links = relay.links() if isinstance(relay, MsrpdCluster) else ""
        if cross:  # where the pairs are now (msrpd moves one end to the other's worker)
            cross = f"{cross} -> {cross_worker(relay, infos)}"
        results = gens.gather(opts.seconds + opts.warmup + 120)
    finally:
        gens.close()
    out = summarise_flood(results, opts.seconds, size)
    out["rate"], out["window_by"] = rate, window_by
    out["relay_cpu"] = u1.cpu - u0.cpu
    out["cross"], out["links"] = cross, links
    busy, softirq = m1.since(m0)
    out["machine"] = {
        "busy": busy,
        "softirq": softirq,
        "relay": out["relay_cpu"] / opts.seconds,
        "generator": sum(out["gen_cpu"]),
    }
    out["us_per_frame"] = out["relay_cpu"] / out["frames"] * 1e6 if out["frames"] else float("nan")
    if u1.redis is not None and u0.redis is not None:  # a cluster's, beside its nodes' CPU
        out["redis_us_per_frame"] = (u1.redis - u0.redis) / max(1, out["frames"]) * 1e6
    if counted:
        frames = out["frames"] or float("nan")
        out["instructions_per_frame"] = instructions / frames
    if profilers:
        out["profile"] = finish_profilers(profilers)
    return out


def summarise_flood(results: list[dict[str, Any]], seconds: float, size: int) -> dict[str, Any]:
    lat: list[int] = []
    for r in results:
        values = array("q")
        values.frombytes(r["lat"])
        lat.extend(values)
    lat.sort()
    frames = sum(r["frames"] for r in results)
    totals: Counter[str] = Counter()
    for r in results:
        totals.update(r["totals"])
    lost = totals["sent"] - totals["received"] - totals["corrupt"]
    # responses answering nothing Alice sent (Bob's 200s, were a relay to pass them on)
    extra = max(0, totals["replies"] - totals["sent"])
    totals.setdefault("reports", 0)
    return {
        "size": size,
        "frames": frames,
        "fps": frames / seconds,
        "mbps": frames * size / seconds / 1e6,
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "samples_lat": len(lat),
        "gen_cpu": [r["cpu"] / seconds for r in results],
        "sent_window": sum(r["sent_window"] for r in results),
        "totals": dict(totals),
        "errors": totals["non200"]
        + totals["reports"]
        + totals["corrupt"]
        + totals["gaps"]  # frames out of order, as README's Performance counts them
        + max(0, lost)
        + extra,
        "lost": lost,
        "extra": extra,
        "samples": [s for r in results for s in r["samples"]][:5],
    }


def watch_pairs(relay: Relay, gens: Generators, infos: list[dict[str, Any]], timeout: float) -> str:
    """Wait for every generator's result (left in its pipe); meanwhile, four times a second,
    where the pairs are (cross_worker): the last look before the results, "" if none. A
    generator closes its connections as it reports, so the pairs are looked at while the load
    runs."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline and not any(p.poll() for p in gens.pipes):
        seen = cross_worker(relay, infos)
        if seen and not seen.endswith("()"):
            last = seen
        time.sleep(0.25)
    return last


def big(relay: Relay, opts: Any, size: int, chunk: int) -> dict[str, Any]:
    """Messages of `size` bytes in SENDs of `chunk` bytes: MB/s and integrity (--verify)."""
    count = max(1, opts.big_mib_per_pair * MiB // size)
    job = job_for(relay, opts, "big", window=opts.window, big_size=size)
    job = replace(job, chunk=chunk, count=count, verify=getattr(opts, "verify", "compare"))
    relay.add_users([f"bob{n}" for n in range(opts.pairs)])
    gens = Generators(job, split(list(range(opts.pairs)), opts.procs))
    try:
        infos = gens.gather(300)
        cross = cross_worker(relay, infos)
        u0 = relay.usage()
        workers = relay.worker_pids() if isinstance(relay, Msrpd) else []
        counted = workers if getattr(opts, "callgrind", None) else []
        if counted:
            callgrind.start(counted, Path(opts.callgrind))
        tracers = kernel.strace(workers, Path(opts.strace)) if getattr(opts, "strace", None) else []
        k0 = kernel.counts(workers)
        t0 = time.monotonic() + 0.3
        gens.go(t0)
        late = watch_pairs(relay, gens, infos, 600)
        results = gens.gather(600)
        k1 = kernel.counts(workers)
        syscalls = kernel.strace_totals(tracers)
        instructions = callgrind.dump(counted, Path(opts.callgrind)) if counted else 0
        u1 = relay.usage()
        if cross and late:  # where the pairs were last seen (colocation moves one end)
            cross = f"{cross} -> {late}"
    finally:
        gens.close()
    last = max(r["last_ns"] for r in results) / 1e9
    elapsed = max(1e-9, last - t0)
    total = sum(r["bytes"] for r in results)
    messages = sum(r["messages"] for r in results)
    intact = sum(r["intact"] for r in results)
    out = {
        "messages": messages,
        "intact": intact,
        "bytes": total,
        "seconds": elapsed,
        "mbps": total / elapsed / 1e6,
        "relay_cpu": u1.cpu - u0.cpu,
        "cross": cross,
        "gen_cpu": [r["cpu"] / elapsed for r in results],
        "gen_ms_per_mib": sum(r["cpu"] for r in results) * 1e3 / max(1e-9, total / MiB),
        "relay_ms_per_mib": (u1.cpu - u0.cpu) * 1e3 / max(1e-9, total / MiB),
        "reports": sum(r["reports"] for r in results),
        "verify": "every byte compared" if job.verify == "compare" else "sha256",
        "errors": (messages - intact)
        + sum(r["non200"] + r["reports"] + r["errors"] for r in results),
        "samples": [s for r in results for s in r["samples"]][:5],
    }
    if workers:
        out["kernel_per_mib"] = (k1 - k0).per(total / MiB)
    if tracers:
        out["syscalls_per_mib"] = {k: n / max(1, total / MiB) for k, n in syscalls.items()}
    if counted:
        out["instructions_per_mib"] = instructions / max(1, total / MiB)
    return out


def idle(relay: Relay, opts: Any, conns: int) -> dict[str, Any]:
    """`conns` authenticated idle connections: relay memory per connection, connections held."""
    time.sleep(1.0)
    base = relay.usage(memory=True)
    per = [conns // opts.procs + (i < conns % opts.procs) for i in range(opts.procs)]
    job = job_for(relay, opts, "idle")
    relay.add_users([f"idle{n}" for n in range(conns)])
    started = time.monotonic()
    firsts = [sum(per[:i]) for i in range(len(per))]
    gens = Generators(job, [[n, first] for n, first in zip(per, firsts, strict=True) if n])
    try:
        infos = gens.gather(900)
        setup = time.monotonic() - started
        time.sleep(1.0)
        mem = relay.usage(memory=True)
        time.sleep(max(0.0, opts.hold - 1.0))
        gens.go(0.0)
        results = gens.gather(120)
    finally:
        gens.close()
    auth = sum(i["authenticated"] for i in infos)
    return {
        "asked": conns,
        "authenticated": auth,
        "held": sum(r["alive"] for r in results),
        "setup_s": setup,
        "rss_base": base.rss,
        "rss": mem.rss,
        "pss_base": base.pss,
        "pss": mem.pss,
        "rss_per_conn": (mem.rss - base.rss) / auth if auth else float("nan"),
        "pss_per_conn": (mem.pss - base.pss) / auth if auth else float("nan"),
        "procs": mem.procs,
        "errors": [e for i in infos for e in i["errors"]][:3],
    }


# -- profiling (msrpd workers, flood only) ---------------------------------------------------


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_profilers(
    relay: Relay, opts: Any, size: int
) -> list[tuple[int, Path, subprocess.Popen[bytes]]]:
    exe = _py_spy()
    if exe is None:
        print("profile: py-spy not found (.venv/bin/pip install py-spy)", file=sys.stderr)
        return []
    out_dir = Path(opts.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in relay.worker_pids():
        raw = out_dir / f"worker-{pid}-{size}B.txt"
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(opts.seconds)))]
        cmd += ["--rate", "200", "--format", "raw", "--nonblocking", "--idle", "-o", str(raw)]
        procs.append(
            (pid, raw, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        )
    return procs


def finish_profilers(profilers: list[tuple[int, Path, subprocess.Popen[bytes]]]) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    total = 0
    for _, raw, proc in profilers:
        proc.wait(60)
        if not raw.exists():
            continue
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            total += int(count)
            self_time[stack.split(";")[-1]] += int(count)
    top = [(name, n / total * 100) for name, n in self_time.most_common(25)] if total else []
    return {"samples": total, "top_self": top, "files": [str(r) for _, r, _ in profilers]}
