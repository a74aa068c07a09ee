"""Instructions per relayed frame, counted by valgrind's callgrind (issue 16).

Usage: scripts/instructions [--frames N] [--repeat R] [--relays kamailio,msrpd,msrpd-pure]
                            [--route cmap|relay] [--rate FPS] [--strace]

One fixed scenario, the same for every relay: children=2 (1 with --route relay, below), 4
Alice/Bob pairs in one generator process, Bob AUTHs (digest), 100 B SENDs, 16 outstanding per
Alice (counted by her responses). Each pair first sends --warmup frames and waits until Bob
has them all and Alice has every response (msrpd's colocation settles in that time); then
callgrind starts counting in every process of the relay and the pairs send exactly N/pairs
frames each; when the last has arrived and been answered, the counting stops. The figure is
the instructions of all the relay's processes (Kamailio's main, tcp_main, readers, timers,
...; msrpd's supervisor and workers) in that window, divided by N. The window is bounded by
frame counts, not by time, so a slow or busy machine changes how long it takes, not what it
counts; kernel work (the system calls) is not counted, nor msrpd's timers (below).

A steady rate (`--rate FPS`, frames/s in total): the counted frames go one at a time in the
whole load, the pairs taking turns, each sent once the one before has reached Bob and been
answered (and no sooner than FPS allows). So the relay reads every frame on its own and
writes it and its 200 in that loop iteration, as at a steady rate well under its capacity
(issue 16's 10,000 frames/s): the count is then the cost of one loop iteration per frame,
where a flood shares an iteration among many. Under valgrind the relay is slower than any
FPS worth asking for, so the frames simply follow each other; natively (`--strace`) FPS sets
the pace. A relay's timers run per second, not per frame, and the frames' window lasts far
longer per frame than natively (valgrind, and one frame at a time): so what msrpd's
processes ran from libuv's timers and idle handles in the window is taken off, read from
the window's own dump (`callgrind.timer_work`). In this scenario that is housekeeping and
heartbeats, and the teardown of connections that closed (seven idle callbacks in a window of
2,000 frames): msrpd can read or write frames from them (a limit's resume, a write batch
queued outside a read, a handoff, a dial's failure), so a run whose timers and idle handles
hold more than a tenth of the window says so, and its figure is not one of frames alone.
The subtraction applies to floods too (from 2026-12-04; figures before it counted timers).
Until 2026-12-04 a second window as long, with no load, was counted and taken off instead:
it held 4x the timer work the frames' window did, and took off 7,000 instructions a frame
too many. Kamailio runs its timers in processes of their own, counted in full: nothing is
taken off it (its timer processes' share was under 0.1% of the window when looked at, not
measured in each run).

System calls (`--strace`): the relays run natively, and `strace -c -f` attached to all of a
relay's processes counts their system calls over the same window (benchlib/syscalls.py);
the figure is calls per frame, in total and by call.

Relays (`--relays`):
  kamailio    Kamailio 5.6.3 with ../shared/oracle/kamailio-cmap.cfg, started by
              run-kamailio.sh (KAM_DEBUG=1), which finds a `kamailio` shim first in PATH
              that execs valgrind on the real one.
  msrpd       msrpd as it imports (its compiled modules where built), MSRPD_PURE unset.
  msrpd-pure  msrpd with MSRPD_PURE=1: the pure-Python path.
msrpd runs --route (cmap: Kamailio's example, as the oracle runs; relay: the default RFC 4976
route, Bob AUTHs and stays on TLS). With --route relay Bob answers every SEND, Kamailio's Bob
too (the same load; Kamailio still runs its cmap config over TCP), and both relays run one
worker by default: a TLS connection never moves to its peer's worker, so with two, how many
pairs stay split (a handoff each way per frame) changes from run to run, and the count by
up to a third. The script sets MSRPD_PURE itself for each msrpd variant, whatever its own
environment holds.

Each relay starts under `valgrind --tool=callgrind --instr-atstart=no` with
benchlib/cgtoggle.c preloaded (forked processes too); --repeat runs each relay that many
times (the relays alternate) and prints the median, the range and the spread, and the ratios
msrpd/Kamailio. Valgrind makes the relay about 50x slower: with the default N=20,000 an msrpd
run counts for 20-70 s on this machine (2 cores, shared), Kamailio for 5-12 s; the whole
script takes about 6 minutes (cmap route) or 9 (relay route, one worker).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchlib import callgrind, runner, syscalls
from benchlib.relays import ORACLE, ROOT, ROUTES, Kamailio, MachineCpu, Msrpd, Relay, other_load

RELAYS = ("kamailio", "msrpd", "msrpd-pure")


def names(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    for name in out:
        if name not in RELAYS:
            raise argparse.ArgumentTypeError(f"{name!r}: one of {', '.join(RELAYS)}")
    return out


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/instructions", description=__doc__, formatter_class=_Formatter
    )
    p.add_argument("--relays", type=names, default=list(RELAYS), help="which relays, in order")
    p.add_argument("--route", choices=ROUTES, default="cmap", help="msrpd's route")
    p.add_argument("--frames", type=int, default=20000, help="relayed frames counted (N)")
    p.add_argument("--warmup", type=int, default=500, help="frames per pair before counting")
    p.add_argument("--repeat", type=int, default=3, help="runs per relay")
    p.add_argument(
        "--children",
        type=int,
        help="relay worker processes (default: 2 with --route cmap, 1 with --route relay)",
    )
    p.add_argument("--pairs", type=int, default=4, help="Alice/Bob pairs")
    p.add_argument("--window", type=int, default=16, help="outstanding SENDs per Alice")
    p.add_argument("--size", type=int, default=100, help="body size")
    p.add_argument("--procs", type=int, default=1, help="generator processes")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per phase at most")
    p.add_argument("--oracle", type=Path, default=ORACLE, help="Kamailio oracle directory")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="a steady rate: frames/s in total, one frame at a time (0: the flood)",
    )
    p.add_argument(
        "--strace", action="store_true", help="count system calls (strace), not instructions"
    )
    p.add_argument("--out", type=Path, help="keep callgrind's files here (default: removed)")
    p.add_argument("--json", type=Path, help="also write every run to this file")
    opts = p.parse_args(argv)
    if opts.frames % opts.pairs:
        p.error("--frames: a multiple of --pairs")
    if opts.rate and opts.procs != 1:  # each process would pace its own pairs at --rate
        p.error("--rate: one generator process (--procs 1), one frame at a time in all")
    opts.bob_answers = opts.route == "relay"  # the relay route waits for Bob's 200
    if opts.children is None:
        # Bob's TLS connections never move: with 2 workers, how many pairs stay split over
        # them (a handoff each way per frame) varies by run, and the count with it.
        opts.children = 1 if opts.route == "relay" else 2
    return opts


def make(name: str, opts: argparse.Namespace, out_dir: Path) -> Relay:
    """`name` ready to start under callgrind, its files in `out_dir`."""
    if name == "kamailio":
        kam = Kamailio(opts.children, opts.oracle)
        if not opts.strace:
            kam.env.update(callgrind.kamailio_env(out_dir))
        return kam
    msrpd = Msrpd(opts.children, route=opts.route, pure=name == "msrpd-pure")
    if msrpd.pure:
        msrpd.label += ", MSRPD_PURE=1"
    if not opts.strace:
        msrpd.wrap = callgrind.wrapper(out_dir)
    return msrpd


def count_once(relay: Relay, opts: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One run: warm up, count N frames, stop. The relay is started and stopped here."""
    per_pair = opts.frames // opts.pairs
    relay.start()
    try:
        relay.add_users([f"bob{n}" for n in range(opts.pairs)])
        job = runner.job_for(relay, opts, "count", size=opts.size, window=opts.window)
        job = replace(
            job, frames=per_pair, warm_frames=opts.warmup, seconds=opts.timeout, rate=opts.rate
        )
        gens = runner.Generators(job, runner.split(list(range(opts.pairs)), opts.procs))
        try:
            infos = gens.gather(300)
            gens.go(time.monotonic() + 0.2)
            warm = gens.gather(opts.timeout + 60)
            if not all(w["complete"] for w in warm):
                raise RuntimeError("the warm-up frames did not all arrive")
            cross = runner.cross_worker(relay, infos)
            pids = sorted(p.pid for p in relay.processes())
            calls: Counter[str] = Counter()
            if opts.strace:
                tracer = syscalls.Tracer(pids, out_dir / "strace.txt")
                tracer.wait_attached()
            else:
                callgrind.start(pids, out_dir)
                callgrind.wait_started(pids, out_dir)
            m0, t0 = MachineCpu(), time.monotonic()
            gens.go(0.0, "count")
            results = gens.gather(opts.timeout + 60)
            timers = 0
            if opts.strace:
                calls = tracer.detach()
                total = sum(calls.values())
            else:
                total = callgrind.dump(pids, out_dir)
                timers = sum(callgrind.timer_work(pids, out_dir).values())
                if relay.label.startswith("msrpd") and not timers:
                    # Every worker runs libuv's timers: none found means the annotate
                    # format changed and nothing would be taken off, silently.
                    raise RuntimeError(f"{relay.label}: no libuv timer work found in the dump")
                if timers > total / 10:
                    print(
                        f"  warning: {timers / total:.0%} of the window ran from libuv's timers "
                        "and idle handles; frames may have been relayed from them",
                        flush=True,
                    )
            m1, elapsed = MachineCpu(), time.monotonic() - t0
        finally:
            gens.close()
    finally:
        relay.stop()
    frames = sum(r["frames"] for r in results)
    summary = runner.summarise_flood(results, elapsed, opts.size)
    if frames != opts.frames or summary["errors"] or not all(r["complete"] for r in results):
        raise RuntimeError(
            f"{relay.label}: {frames} of {opts.frames} frames counted, errors "
            f"{summary['errors']} ({summary['totals']})"
        )
    return {
        "total": total - timers,
        "timers": timers,
        "per_frame": (total - timers) / frames,
        "calls": {name: n / frames for name, n in calls.most_common()},
        "processes": len(pids),
        "seconds": elapsed,
        "busy": m1.since(m0)[0],
        "cross": cross,
    }


def spread(values: list[float]) -> tuple[float, float]:
    """(median, (max - min) / median)."""
    ordered = sorted(values)
    mid = ordered[(len(ordered) - 1) // 2]
    return mid, (ordered[-1] - ordered[0]) / mid


def compiled_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "msrpd").rglob("*.so"))


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    runner.raise_nofile()
    built = compiled_modules()
    print(
        f"scenario: children={opts.children}, {opts.pairs} pairs, {opts.size} B SENDs, "
        + (
            f"a steady rate: one frame at a time, at most {opts.rate:,.0f}/s"
            if opts.rate
            else f"window {opts.window}"
        )
        + f", {opts.warmup} frames per pair of warm-up, then {opts.frames:,} counted; "
        f"counting {'system calls (strace)' if opts.strace else 'instructions (callgrind)'}; "
        f"Bob {'answers every SEND' if opts.bob_answers else 'does not answer'}; "
        f"msrpd {opts.route} route{' (Bob on TLS)' if opts.route == 'relay' else ''}; "
        "msrpd as imported: "
        + (
            f"{len(built)} compiled modules ({', '.join(built)})" if built else "no compiled module"
        ),
        flush=True,
    )
    base = opts.out or Path(tempfile.mkdtemp(prefix="instructions-"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in opts.relays}
    unit = "system calls" if opts.strace else "instructions"
    labels: dict[str, str] = {}
    try:
        for n in range(opts.repeat):
            for name in opts.relays:  # alternating: a noisy spell hits every relay alike
                out_dir = base / f"{name}-{n + 1}"
                out_dir.mkdir(parents=True, exist_ok=True)
                busy, top = other_load()
                relay = make(name, opts, out_dir)
                labels[name] = relay.label
                r = count_once(relay, opts, out_dir)
                runs[name].append(r)
                print(
                    f"{relay.label} run {n + 1}: {r['per_frame']:,.{1 if opts.strace else 0}f} "
                    f"{unit}/frame ({r['total']:,} over {r['processes']} processes, "
                    f"{r['seconds']:.1f} s counted"
                    + (f", pairs across workers as it began {r['cross']}" if r["cross"] else "")
                    + f"); machine busy {busy:.2f} cores before"
                    + (f" ({top})" if top else "")
                    + f", {r['busy']:.2f} while counting"
                    + (
                        f"; less {r['timers']:,} in libuv's timers and idle handles"
                        if r["timers"]
                        else ""
                    ),
                    flush=True,
                )
                if r["calls"]:
                    print("  " + by_call(r["calls"]), flush=True)
    finally:
        if opts.out is None:
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(table(runs, labels, unit, 1 if opts.strace else 0))
    if opts.json:
        opts.json.write_text(json.dumps(runs, indent=2))
    return 0


def by_call(calls: dict[str, float]) -> str:
    """System calls per frame by call, the most frequent first."""
    return ", ".join(f"{name} {n:.2f}" for name, n in calls.items() if n >= 0.01)


def table(
    runs: dict[str, list[dict[str, Any]]], labels: dict[str, str], unit: str, digits: int
) -> str:
    """relay | per run | median | spread | over Kamailio."""
    kam = spread([r["per_frame"] for r in runs["kamailio"]])[0] if runs.get("kamailio") else None
    rows = [("relay", f"{unit}/frame, run by run", "median", "spread", "/ Kamailio")]
    for name, results in runs.items():
        values = [r["per_frame"] for r in results]
        mid, width = spread(values)
        ratio = f"{mid / kam:.2f}" if kam else ""
        each = ", ".join(f"{v:,.{digits}f}" for v in values)
        rows.append((labels[name], each, f"{mid:,.{digits}f}", f"{width * 100:.1f}%", ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
