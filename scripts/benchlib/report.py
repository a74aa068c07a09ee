"""Turning results into lines and the side-by-side table."""

from __future__ import annotations

import math
from typing import Any

CPU_TARGET = 1.0
"""Issue 16: msrpd's relay CPU per frame over Kamailio's, at most (every flood, the rate)."""
P99_TARGET = 1.0
"""Issue 16: p99 at the fixed rate (10,000 frames/s), msrpd over Kamailio, at most."""
E2E_FPS_TARGET = 1.0
"""Issue 16: frames/s with the end-to-end window, msrpd over Kamailio, at least."""
BIG_TARGET_MBPS = 1000.0
"""Issue 16: messages of 1 MiB and more, MB/s (10^6 bytes), intact."""
RSS_TARGET_KIB = 20.0
CONNS_TARGET = 10000
"""Issue 7's idle bars."""


def size_name(size: int) -> str:
    if size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def num(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def cpu_list(values: list[float]) -> str:
    return " ".join(f"{v * 100:.0f}%" for v in values)


def _cross(r: dict[str, Any]) -> str:
    if r.get("links"):  # a cluster: the nodes' connections to one another
        return f", connections between nodes: {r['links']}"
    return f", {r['cross']} pairs across workers" if r.get("cross") else ""


def flood_line(relay: str, label: str, r: dict[str, Any]) -> str:
    t = r["totals"]
    return (
        f"{label} [{relay}{_cross(r)}]: {num(r['fps'])} frames/s, {num(r['mbps'], 1)} MB/s, "
        f"p50 {num(r['p50_ms'], 2)} ms, p99 {num(r['p99_ms'], 2)} ms, "
        f"relay {num(r['us_per_frame'], 1)} us CPU/frame ({num(r['relay_cpu'], 1)} s CPU), "
        + (
            f"Redis {num(r['redis_us_per_frame'], 2)} us CPU/frame besides, "
            if "redis_us_per_frame" in r
            else ""
        )
        + f"generator CPU per process {cpu_list(r['gen_cpu'])}; errors {r['errors']} "
        f"(non-200 {t['non200']}, REPORT {t.get('reports', 0)}, lost {r['lost']}, "
        f"corrupt {t['corrupt']}, "
        f"out of order {t['gaps']}, closed {t['closed']}"
        + (f", extra replies {r['extra']}" if r.get("extra") else "")
        + f"); {machine_text(r['machine'])}"
        + (f"; samples {r['samples']}" if r["samples"] else "")
        + (
            f"; callgrind {num(r['instructions_per_frame'])} instructions/frame in the workers"
            if "instructions_per_frame" in r
            else ""
        )
    )


def machine_text(m: dict[str, float]) -> str:
    other = max(0.0, m["busy"] - m["relay"] - m["generator"])
    return (
        f"machine busy {m['busy']:.2f} cores: relay {m['relay']:.2f}, generator "
        f"{m['generator']:.2f}, rest {other:.2f} (softirq {m['softirq']:.2f})"
    )


def big_line(relay: str, label: str, r: dict[str, Any]) -> str:
    return (
        f"{label} [{relay}{_cross(r)}]: {num(r['mbps'])} MB/s, "
        f"{r['intact']}/{r['messages']} messages intact ({r.get('verify', 'sha256')}), "
        f"{num(r['bytes'] / 1e6)} MB in {num(r['seconds'], 2)} s, relay "
        f"{num(r['relay_cpu'], 1)} s CPU ({num(r.get('relay_ms_per_mib', 0), 2)} ms/MiB), "
        f"generator CPU per process {cpu_list(r['gen_cpu'])} "
        f"({num(r.get('gen_ms_per_mib', 0), 2)} ms/MiB in all); "
        f"errors {r['errors']} (REPORT {r.get('reports', 0)})"
        + (f"; samples {r['samples']}" if r["samples"] else "")
        + (_kernel(r["kernel_per_mib"]) if "kernel_per_mib" in r else "")
        + (_syscalls(r["syscalls_per_mib"]) if "syscalls_per_mib" in r else "")
        + (
            f"; callgrind {num(r['instructions_per_mib'])} instructions/MiB in the workers"
            if "instructions_per_mib" in r
            else ""
        )
    )


def _kernel(k: dict[str, float]) -> str:
    return (
        f"; per MiB in the workers: {num(k['reads'], 1)} reads, {num(k['writes'], 1)} writes, "
        f"{num(k['faults'], 1)} page faults, CPU {num(k['user_ms'], 2)} ms user + "
        f"{num(k['system_ms'], 2)} ms system"
    )


def _syscalls(calls: dict[str, float]) -> str:
    top = sorted(calls.items(), key=lambda kv: -kv[1])
    return "; strace, calls per MiB: " + ", ".join(
        f"{name} {n:.1f}" for name, n in top if n >= 0.05
    )


def idle_line(relay: str, r: dict[str, Any]) -> str:
    return (
        f"idle {r['asked']} [{relay}]: {r['authenticated']} authenticated in "
        f"{num(r['setup_s'], 1)} s, {r['held']} held; relay RSS {num(r['rss_base'] / 2**20, 1)}"
        f" -> {num(r['rss'] / 2**20, 1)} MiB over {r['procs']} processes: "
        f"{num(r['rss_per_conn'] / 1024, 1)} KiB RSS per connection "
        f"({num(r['pss_per_conn'] / 1024, 1)} KiB PSS)"
        + (f"; errors {r['errors']}" if r["errors"] else "")
    )


def profile_lines(profile: dict[str, Any], top: int = 20) -> list[str]:
    lines = [f"py-spy, msrpd workers, {profile['samples']} samples (idle included), self time:"]
    lines += [f"  {share:5.1f}%  {name}" for name, share in profile["top_self"][:top]]
    lines.append("  raw stacks: " + " ".join(profile["files"]))
    return lines


Pair = tuple[float | None, float | None]
"""(Kamailio, msrpd); None where a relay did not run the load."""


class Table:
    """figure | Kamailio | msrpd | msrpd/Kamailio | target | verdict (or other columns)."""

    def __init__(
        self, ours: str = "msrpd", theirs: str = "Kamailio", ratio: str = "msrpd/Kamailio"
    ) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.ours, self.theirs, self.ratio = ours, theirs, ratio

    def add(
        self, figure: str, pair: Pair, digits: int, target: str = "", met: bool | None = None
    ) -> None:
        kam, ours = pair
        verdict = "" if met is None else ("met" if met else "MISSED")
        self.rows.append(
            (figure, _cell(kam, digits), _cell(ours, digits), _ratio(pair), target, verdict)
        )

    def render(self) -> str:
        head = ("figure", self.theirs, self.ours, self.ratio, "target", "")
        rows = [head, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out = []
        for n, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
            ]
            out.append("| " + " | ".join(cells) + " |")
            if n == 0:
                out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(out)


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else num(value, digits)


def ratio_of(pair: Pair) -> float | None:
    kam, ours = pair
    if kam is None or ours is None or math.isnan(kam) or math.isnan(ours) or kam == 0:
        return None
    return ours / kam


def _ratio(pair: Pair) -> str:
    r = ratio_of(pair)
    return "" if r is None else f"{r:.2f}"


SIDE_NAMES = ("kamailio", "msrpd")
"""The relays of `side` as results name them: the compared one, then ours."""


def _pair(
    per_relay: dict[str, dict[str, Any]],
    key: str,
    scale: float = 1.0,
    names: tuple[str, str] = SIDE_NAMES,
) -> Pair:
    def one(name: str) -> float | None:
        value = per_relay.get(name, {}).get(key)
        return None if value is None else float(value) * scale

    return one(names[0]), one(names[1])


def side_table(results: dict[str, dict[str, dict[str, Any]]], ours: str = "msrpd") -> str:
    """`ours`: msrpd's column heading (which route ran)."""
    t = Table(ours)
    for label, per_relay in results.items():
        if label.startswith(("flood", "rate")):
            _flood_rows(t, label, per_relay)
        elif label.startswith("idle"):
            _idle_rows(t, label, per_relay)
        elif label.startswith("big") and "msrpd" in per_relay:
            r = per_relay["msrpd"]
            ok = r["intact"] == r["messages"] and r["errors"] == 0 and r["mbps"] >= BIG_TARGET_MBPS
            t.add(f"{label}: MB/s", (None, r["mbps"]), 0, f">= {BIG_TARGET_MBPS:,.0f}, intact", ok)
    return t.render()


def _bar(
    t: Table,
    figure: str,
    pair: Pair,
    digits: int,
    most: float | None = None,
    least: float | None = None,
) -> None:
    """A row with a bar on the ratio msrpd/Kamailio: at most `most`, at least `least`, or none."""
    r = ratio_of(pair)
    if most is not None:
        t.add(figure, pair, digits, f"<= {most}x", r is not None and r <= most)
    elif least is not None:
        t.add(figure, pair, digits, f">= {least}x", r is not None and r >= least)
    else:
        t.add(figure, pair, digits)


def _flood_rows(t: Table, label: str, per_relay: dict[str, dict[str, Any]]) -> None:
    """Issue 16's bars: CPU per frame everywhere, frames/s with the end-to-end window only
    (with the window counted by 200s the relays' pacing of their 200s sets Alice's pace),
    p99 at the fixed rate."""
    first = per_relay[next(iter(per_relay))]
    rate = bool(first.get("rate"))
    e2e = first.get("window_by") == "delivered" and not rate
    fps = _pair(per_relay, "fps")
    _bar(t, f"{label}: frames/s", fps, 0, least=E2E_FPS_TARGET if e2e else None)
    t.add(f"{label}: payload MB/s", _pair(per_relay, "mbps"), 1)
    t.add(f"{label}: p50 latency ms", _pair(per_relay, "p50_ms"), 2)
    p99 = _pair(per_relay, "p99_ms")
    _bar(t, f"{label}: p99 latency ms", p99, 2, most=P99_TARGET if rate else None)
    cpu = _pair(per_relay, "us_per_frame")
    _bar(t, f"{label}: relay CPU us/frame", cpu, 1, most=CPU_TARGET)
    errors = _pair(per_relay, "errors")
    t.add(f"{label}: errors", errors, 0, "0", errors[1] == 0)


RUN_FIGURES = {
    "flood": (("fps", "frames/s", 0, 1.0), ("us_per_frame", "CPU us/frame", 1, 1.0)),
    "rate": (("p99_ms", "p99 ms", 2, 1.0), ("us_per_frame", "CPU us/frame", 1, 1.0)),
    "idle": (("rss_per_conn", "RSS KiB/conn", 1, 1 / 1024),),
    "big": (("mbps", "MB/s", 0, 1.0),),
}
"""Per kind of load: (key, name, digits, scale) of the figures listed run by run."""


def runs_lines(
    results: dict[str, dict[str, dict[str, Any]]], names: tuple[str, str] = SIDE_NAMES
) -> list[str]:
    """The runs one by one (with --repeat), Kamailio / msrpd (or `names`) as they ran."""
    lines = [f"The runs one by one ({names[0]} / {names[1]}, in the order they ran):"]
    for label, per_relay in results.items():
        for key, name, digits, scale in RUN_FIGURES[label.split(" ", 1)[0]]:
            ours = per_relay.get(names[1], {}).get("runs", {}).get(key, [])
            theirs = per_relay.get(names[0], {}).get("runs", {}).get(key, [None] * len(ours))
            each = ", ".join(
                f"{_cell(k if k is None else k * scale, digits)} / {_cell(m * scale, digits)}"
                for k, m in zip(theirs, ours, strict=True)
            )
            lines.append(f"  {label}: {name}: {each}")
    return lines


def _idle_rows(t: Table, label: str, per_relay: dict[str, dict[str, Any]]) -> None:
    held = _pair(per_relay, "held")
    asked = int(per_relay[next(iter(per_relay))]["asked"])
    want = min(asked, CONNS_TARGET)
    t.add(f"{label}: connections held", held, 0, f">= {want}", (held[1] or 0) >= want)
    rss = _pair(per_relay, "rss_per_conn", 1 / 1024)
    ok = rss[1] is not None and rss[1] <= RSS_TARGET_KIB
    t.add(f"{label}: RSS KiB/conn", rss, 1, f"<= {RSS_TARGET_KIB:.0f}", ok)
    t.add(f"{label}: PSS KiB/conn", _pair(per_relay, "pss_per_conn", 1 / 1024), 1)


CLUSTER_NAMES = ("single", "cluster")
"""The cluster mode's relays as results name them: one node, then the cluster."""


def cluster_table(results: dict[str, dict[str, dict[str, Any]]], nodes: int) -> str:
    """figure | one node | `nodes` nodes | their ratio, for each flood of the cluster mode."""
    t = Table(f"{nodes} nodes", "1 node", f"{nodes} nodes/1 node")
    rows = (
        ("frames/s", "fps", 0),
        ("payload MB/s", "mbps", 1),
        ("p50 latency ms", "p50_ms", 2),
        ("p99 latency ms", "p99_ms", 2),
        ("relay CPU us/frame", "us_per_frame", 1),
        ("Redis CPU us/frame (not in relay's)", "redis_us_per_frame", 2),
    )
    for label, per_relay in results.items():
        for figure, key, digits in rows:
            t.add(f"{label}: {figure}", _pair(per_relay, key, names=CLUSTER_NAMES), digits)
        errors = _pair(per_relay, "errors", names=CLUSTER_NAMES)
        t.add(f"{label}: errors", errors, 0, "0", errors == (0, 0))
    return t.render()
