"""Load generator and side-by-side benchmark: msrpd against Kamailio 5.6.3 (issue 7).

Usage: scripts/bench MODE [options]     (scripts/bench --help for every option)

  flood   K Alice/Bob pairs; Bob AUTHs (digest), Alice keeps W SENDs outstanding through the
          relay (counted by her 200s; --window-by delivered: until Bob has them, the
          end-to-end window): relayed frames/s (frames Bob receives, body checked), payload
          MB/s, p50/p99 send->receive latency, relay CPU per frame, errors.
  rate    the same at a fixed total rate (--rate frames/s): latency.
  idle    N authenticated idle connections: relay RSS (and PSS) per connection, held.
  big     1 MiB to 64 MiB messages, in 1 MiB SENDs and in one SEND: MB/s, every byte intact
          (compared with what was sent; --verify sha256: by digest).
  cluster --nodes N msrpd nodes on this machine (default relay route, one user store, one
          private Redis when /usr/bin/redis-server exists): pair n's Alice AUTHs on node n
          and Bob on node n+1, so every SEND crosses two nodes; the floods of --sizes
          against the same load on one node (both tokens its own), alternating with
          --repeat: frames/s, latency, CPU per frame of every node's processes, errors.
  side    Kamailio (kamailio-cmap.cfg) then msrpd, a fresh relay for each load, the same
          children and load: floods (window by 200s) of --sizes, floods with the end-to-end
          window of --e2e-sizes, the fixed rate, idle, big; a table of both figures, the
          ratio msrpd/Kamailio and issue 16's bars; with --repeat, every figure's median and
          the runs one by one.

--route picks msrpd's route: cmap (Kamailio's example, plain TCP, any user with password
xyz123) or relay (the default RFC 4976 relay route: Bob AUTHs over TLS against a user store
and stays there, Alice sends over plain TCP, every forwarded SEND waits for Bob's 200).
--bob-answers makes Bob answer every SEND with a 200, as endpoints do (default: on for the
relay route, off for cmap; in side mode it holds for Kamailio too, so both get the same load).
--bob-tls puts Bob on TLS under the cmap route too (msrpd only): `--route cmap --bob-answers
--bob-tls` against `--route relay` compares the two routes on the same transports.

The generator runs in --procs processes on uvloop, writes pre-built frames in one write per
batch and counts replies per read, and prints its own CPU per process: near 100% means the
generator, not the relay, set the pace.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import callgrind, report, runner
from benchlib.cluster import MsrpdCluster
from benchlib.relays import (
    ORACLE,
    ROUTES,
    Msrpd,
    Relay,
    hot_build,
    make_relay,
    other_load,
)
from benchlib.report import size_name

from msrpd.hotpath import pure_requested

MiB = 1 << 20


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=_Formatter
    )
    p.add_argument("mode", choices=("flood", "rate", "idle", "big", "side", "cluster"))
    p.add_argument("--relay", choices=("msrpd", "kamailio"), default="msrpd")
    p.add_argument(
        "--route",
        choices=ROUTES,
        default="cmap",
        help="msrpd's route: Kamailio's cmap example (TCP), or the default RFC 4976 relay "
        "route (Bob AUTHs over TLS against a user store)",
    )
    p.add_argument(
        "--bob-answers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Bob answers every SEND with a 200 (default: on for --route relay, off for cmap)",
    )
    p.add_argument(
        "--bob-tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="msrpd: Bob AUTHs and stays on TLS (default: on for --route relay, which takes "
        "AUTH over TLS only; --route cmap --bob-tls compares the two routes on one transport)",
    )
    p.add_argument("--children", type=int, default=2, help="relay worker processes")
    p.add_argument("--nodes", type=int, default=2, help="cluster: msrpd nodes (2 or more)")
    p.add_argument("--pairs", type=int, default=4, help="Alice/Bob pairs")
    p.add_argument("--window", type=int, default=16, help="outstanding SENDs per Alice")
    p.add_argument(
        "--window-by",
        choices=("replies", "delivered"),
        default="replies",
        help="flood: a SEND is outstanding until Alice has its response, or until Bob has "
        "received it (the end-to-end window: the relays' pacing of their 200s does not count)",
    )
    p.add_argument("--procs", type=int, default=2, help="generator processes")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    p.add_argument("--sizes", type=ints, default=[100, 4096, 10240], help="flood body sizes")
    p.add_argument("--rate", type=float, default=10000.0, help="rate mode: total frames/s")
    p.add_argument("--rate-size", type=int, default=100, help="rate mode: body size")
    p.add_argument("--conns", type=ints, default=[2000, 10000], help="idle: connection counts")
    p.add_argument("--hold", type=float, default=5.0, help="idle: seconds to hold them")
    p.add_argument("--big-sizes", type=ints, default=[1, 4, 16, 64], help="big: MiB")
    p.add_argument("--big-chunk", type=int, default=1, help="big: MiB per chunked SEND")
    p.add_argument(
        "--big-mib-per-pair",
        type=int,
        default=512,
        help="big: MiB per pair per run (512: about 1.5 s a run here; at 128, a run lasted "
        "half a second, much of it before colocation had settled)",
    )
    p.add_argument(
        "--verify",
        choices=("compare", "sha256"),
        default="compare",
        help="big: Bob checks each message byte for byte against what Alice sent (a memcmp "
        "per piece), or by its sha256 (about twice the generator's CPU per MiB)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per load; the median is kept")
    p.add_argument(
        "--alice-ws",
        action="store_true",
        help="flood, rate (msrpd): Alice over WebSocket (ws:, RFC 7977), Bob over TCP",
    )
    p.add_argument(
        "--e2e-sizes",
        type=ints,
        default=[100],
        help="side: body sizes of the floods with the end-to-end window (--window-by delivered)",
    )
    p.add_argument("--no-e2e", action="store_true", help="side: skip the end-to-end floods")
    p.add_argument("--no-big", action="store_true", help="side: skip big messages")
    p.add_argument("--no-rate", action="store_true", help="side: skip the fixed-rate run")
    p.add_argument("--no-idle", action="store_true", help="side: skip idle connections")
    p.add_argument("--profile", metavar="DIR", help="flood, msrpd: py-spy its workers")
    p.add_argument(
        "--callgrind",
        metavar="DIR",
        help="flood, rate or big, msrpd: run it under valgrind's callgrind and report the "
        "instructions its workers execute per frame (big: per MiB) in the measured window "
        "(about 50x slower; files in DIR)",
    )
    p.add_argument(
        "--strace",
        metavar="DIR",
        help="big, msrpd: count its workers' system calls by kind (strace -c; slower)",
    )
    p.add_argument(
        "--msrpd-option",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="add to msrpd's config, a TOML value (repeatable), e.g. msrp.max_body=65536",
    )
    p.add_argument(
        "--pure",
        action=argparse.BooleanOptionalAction,
        default=pure_requested(),
        help="run msrpd's hot path from its .py sources (MSRPD_PURE=1), not the compiled "
        "modules; the default follows MSRPD_PURE",
    )
    p.add_argument("--oracle", type=Path, default=ORACLE, help="Kamailio oracle directory")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    opts = p.parse_args(argv)
    if opts.mode == "cluster":
        if opts.nodes < 2:
            p.error("--nodes: 2 or more")
        if opts.alice_ws or opts.callgrind or opts.profile or opts.relay != "msrpd":
            p.error("cluster: msrpd only, without --alice-ws, --callgrind or --profile")
        opts.route = "relay"  # the route that forwards between nodes by token
    if opts.bob_answers is None:
        opts.bob_answers = opts.route == "relay"
    if opts.callgrind and (opts.relay != "msrpd" or opts.mode not in ("flood", "rate", "big")):
        p.error("--callgrind: flood, rate or big mode, against msrpd")
    if opts.alice_ws and (opts.relay != "msrpd" or opts.mode not in ("flood", "rate")):
        p.error("--alice-ws: flood or rate mode, against msrpd")
    return opts


def _big(relay: Relay, opts: argparse.Namespace, size: int, chunk: int) -> dict[str, Any]:
    return runner.big(relay, opts, size, chunk)


def _big_line(name: str, r: dict[str, Any], label: str) -> str:
    return report.big_line(name, label, r)


FIGURES = (
    "fps",
    "mbps",
    "p50_ms",
    "p99_ms",
    "us_per_frame",
    "redis_us_per_frame",
    "rss_per_conn",
    "pss_per_conn",
)
"""Taken as the median of their own runs (a run's other values come from the median run)."""


def median(results: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the lower middle one), with each of FIGURES the
    median of its own values and every run's values in "runs"; errors: the most of any run."""
    ordered = sorted(results, key=lambda r: r[key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs"] = {f: [r[f] for r in results] for f in (key, *FIGURES) if f in chosen}
    for figure, values in chosen["runs"].items():
        chosen[figure] = sorted(values)[(len(values) - 1) // 2]
    if isinstance(chosen.get("errors"), int):
        chosen["errors"] = max(r["errors"] for r in results)
    return chosen


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def versions() -> str:
    """The msrpd tree measured (it may carry uncommitted changes) and Kamailio's version."""
    root = Path(__file__).resolve().parent.parent

    def out(*cmd: str) -> str:
        return subprocess.run(cmd, check=False, capture_output=True, text=True).stdout

    head = out("git", "-C", str(root), "rev-parse", "--short", "HEAD").strip()
    dirty = out("git", "-C", str(root), "status", "--porcelain", "msrpd")
    kam = out("/usr/sbin/kamailio", "-v")
    kam_version = kam.split("\n", 1)[0].replace("version: ", "").strip() if kam else "?"
    tree = head + (" + uncommitted changes in msrpd/" if dirty else "")
    return f"msrpd {tree}; {kam_version}"


@dataclass
class Load:
    label: str
    measure: Callable[[Relay], dict[str, Any]]
    line: Callable[[str, dict[str, Any]], str]
    key: str
    """the figure a median over --repeat runs is taken by"""
    kamailio: bool = True


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.results: dict[str, dict[str, Any]] = {}

    def loads(self, mode: str) -> list[Load]:
        o, side = self.opts, mode == "side"
        out: list[Load] = []
        if mode == "idle" or (side and not o.no_idle):
            out += [self._idle(n) for n in o.conns]
        if mode in ("flood", "side", "cluster"):
            out += [self._flood(size) for size in o.sizes]
        if side and not o.no_e2e:
            out += [self._flood(size, "delivered") for size in o.e2e_sizes]
        if mode == "rate" or (side and not o.no_rate):
            out.append(self._rate())
        if mode == "big" or (side and not o.no_big):
            out += self._big()
        return out

    def _flood(self, size: int, window_by: str = "") -> Load:
        window_by = window_by or self.opts.window_by
        label = f"flood {size_name(size)}"
        if window_by == "delivered":
            label += ", end-to-end window"
        return Load(
            label,
            lambda relay: runner.flood(relay, self.opts, size, window_by=window_by),
            lambda name, r: report.flood_line(name, label, r),
            "fps",
        )

    def _rate(self) -> Load:
        o = self.opts
        label = f"rate {o.rate:,.0f}/s {size_name(o.rate_size)}"
        return Load(
            label,
            lambda relay: runner.flood(relay, o, o.rate_size, o.rate),
            lambda name, r: report.flood_line(name, label, r),
            "p99_ms",
        )

    def _idle(self, conns: int) -> Load:
        return Load(
            f"idle {conns}",
            lambda relay: runner.idle(relay, self.opts, conns),
            report.idle_line,
            "rss_per_conn",
        )

    def _big(self) -> list[Load]:
        out = []
        for mib in self.opts.big_sizes:
            for chunk in sorted({min(mib, self.opts.big_chunk), mib}):
                how = "one SEND" if chunk == mib else f"{chunk} MiB SENDs"
                label = f"big {mib} MiB in {how}"
                out.append(
                    Load(
                        label,
                        partial(_big, opts=self.opts, size=mib * MiB, chunk=chunk * MiB),
                        partial(_big_line, label=label),
                        "mbps",
                        kamailio=False,  # it relays no frame of 11,239 bytes or more
                    )
                )
        return out

    def run(self, mode: str) -> None:
        relays = {"side": list(report.SIDE_NAMES), "cluster": list(report.CLUSTER_NAMES)}.get(
            mode, [self.opts.relay]
        )
        for load in self.loads(mode):
            names = [n for n in relays if load.kamailio or n == "msrpd" or mode != "side"]
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for _ in range(self.opts.repeat):
                for name in names:  # alternating: a noisy spell hits both relays alike
                    self.warn_other_load()
                    label, result = self.once(name, load)
                    print(load.line(label, result), flush=True)
                    runs[name].append(result)
            for name, results in runs.items():
                self.results.setdefault(load.label, {})[name] = median(results, load.key)

    def once(self, name: str, load: Load) -> tuple[str, dict[str, Any]]:
        """One run of `load` on a fresh relay: (the relay's label, the result)."""
        o = self.opts
        if name in ("single", "cluster"):
            count = o.nodes if name == "cluster" else 1
            relay: Relay = MsrpdCluster(count, o.children, o.msrpd_option, o.pure)
        else:
            relay = make_relay(
                name, o.children, o.oracle, o.msrpd_option, o.route, o.bob_tls, o.pure
            )
        if o.callgrind and isinstance(relay, Msrpd):
            relay.wrap = callgrind.wrapper(Path(o.callgrind))
        try:
            relay.start()
            result = load.measure(relay)
        except Exception:
            print(f"{load.label} [{name}] failed; relay log:\n{relay.log_tail()}", file=sys.stderr)
            raise
        finally:
            relay.stop()
        if "profile" in result:
            print("\n".join(report.profile_lines(result["profile"])), flush=True)
        return relay.label, result

    def warn_other_load(self) -> None:
        busy, top = other_load()
        if busy > 0.2:
            print(f"warning: the machine is busy before this run: {busy:.2f} cores ({top})")


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    limit = runner.raise_nofile()
    print(f"machine: {machine()}; fd limit {limit}", flush=True)
    print(versions(), flush=True)
    print(
        f"load: children={opts.children}, {opts.pairs} pairs, window {opts.window} "
        f"(by {opts.window_by}), "
        f"{opts.procs} generator processes, {opts.seconds:g} s measured after {opts.warmup:g} s; "
        f"msrpd {opts.route} route, hot path {hot_build(opts.pure)}; "
        f"Bob {'answers' if opts.bob_answers else 'does not answer'} SENDs",
        flush=True,
    )
    bench = Bench(opts)
    bench.run(opts.mode)
    if opts.mode == "side":
        print()
        print(report.side_table(bench.results, f"msrpd ({opts.route})"))
        if opts.repeat > 1:
            print()
            print("\n".join(report.runs_lines(bench.results)))
    if opts.mode == "cluster":
        print()
        print(report.cluster_table(bench.results, opts.nodes))
        if opts.repeat > 1:
            print()
            print("\n".join(report.runs_lines(bench.results, report.CLUSTER_NAMES)))
    if opts.json:
        opts.json.write_text(json.dumps(bench.results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
