"""Comparing transcripts: live Kamailio against its golden file, msrpd against live Kamailio.

Strategy: a golden file's events become the same Step list the driver records (a "send"
opens a step; "recv", "eof" and "accept" items go to it), normalised by the same code from
the same raw text, so both sides of every comparison went through one normaliser. A mismatch
is reported per step and connection, with long frames shortened around the difference.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from .driver import Step, normalise_steps
from .expected_differences import GLOBAL, Difference, Item
from .scenarios import Scenario
from .wire import ACCEPT, EOF

__all__ = ["ELIDED", "expected_msrpd", "golden_steps", "mask_stack_garbage", "problems"]

ELIDED = "<ELIDED: the golden file keeps only the head and tail of this frame>"
# Kamailio's 423: the 17 bytes where Min-Expires/Max-Expires belongs hold stack memory.
_STACK_GARBAGE = re.compile(
    r"\A(MSRP \S+ 423 [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?From-Path: [^\r\n]*\r\n).{17}"
    r"(-------<TID\d+>\$\r\n)\Z",
    re.S,
)


def golden_steps(scenario: Scenario) -> list[Step]:
    steps: list[Step] = []
    for event in scenario.data["events"]:
        kind, conn, raw = event["type"], event["conn"], event.get("raw")
        if kind == "send":
            steps.append(Step(conn, raw if isinstance(raw, str) else ELIDED))
            continue
        item = {"recv": raw, "eof": EOF, "accept": ACCEPT}.get(kind)
        if item is not None and steps:
            steps[-1].received.setdefault(conn, []).append(item)
    return normalise_steps(steps, scenario.golden_placeholders)


def mask_stack_garbage(steps: list[Step]) -> list[Step]:
    """Kamailio's 423 garbage shown as its length: the bytes are whatever the stack held."""
    masked = r"\1<17 BYTES OF STACK MEMORY>\2"
    return [
        Step(
            s.conn,
            s.sent,
            {c: [_STACK_GARBAGE.sub(masked, i) for i in items] for c, items in s.received.items()},
            s.probe,
        )
        for s in steps
    ]


def expected_msrpd(kamailio: list[Step], difference: Difference | None) -> list[Step]:
    """What msrpd must give: Kamailio's steps under the GLOBAL rules, the table's overrides.

    A pinned step of None is returned with sent=None (msrpd does not play it)."""
    expected: list[Step] = []
    for i, step in enumerate(kamailio):
        received: dict[str, list[Item]] = {}
        for conn, items in step.received.items():
            ruled = list(items)
            for rule in GLOBAL:
                ruled = [rule.apply(item) for item in ruled]
            received[conn] = list(ruled)
        sent = step.sent
        if difference is not None and i in difference.steps:
            pinned = difference.steps[i]
            sent = None if pinned is None else "<played>"
            received = dict(pinned or {})
        expected.append(Step(step.conn, sent, received, step.probe))  # type: ignore[arg-type]
    return expected


def _show(text: str) -> str:
    if len(text) <= 1200:
        return repr(text)
    digest = hashlib.sha256(text.encode("latin-1", "replace")).hexdigest()[:12]
    return f"{text[:500]!r} ...<{len(text)} chars, sha256 {digest}>... {text[-200:]!r}"


def _show_item(item: Item) -> str:
    return f"/{item.pattern}/" if isinstance(item, re.Pattern) else _show(item)


def _item_matches(expected: Item, actual: str) -> bool:
    if isinstance(expected, re.Pattern):
        return expected.fullmatch(actual) is not None
    return expected == actual


def _outcome_problems(
    i: int, expected: Mapping[str, Sequence[Item]], actual: Mapping[str, Sequence[str]]
) -> list[str]:
    out = []
    for conn in sorted(set(expected) | set(actual)):
        want, got = expected.get(conn, []), actual.get(conn, [])
        if len(want) == len(got) and all(map(_item_matches, want, got)):
            continue
        out.append(f"step {i}, {conn} received:")
        out.extend(f"    expected: {_show_item(w)}" for w in want)
        out.extend(f"    got:      {_show(g)}" for g in got)
        if not want:
            out.append("    expected: nothing")
        if not got:
            out.append("    got:      nothing")
    return out


def problems(expected: list[Step], actual: list[Step], *, check_sent: bool = True) -> list[str]:
    """Every difference between two step lists, as readable lines (empty: they agree)."""
    out: list[str] = []
    if len(expected) != len(actual):
        out.append(f"{len(expected)} steps expected, {len(actual)} played")
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if (want.sent is None) != (got.sent is None):
            played = "played" if got.sent is not None else "not played (connection closed)"
            out.append(f"step {i} on {got.conn}: {played}, expected the opposite")
        elif check_sent and want.sent not in (None, "<played>", ELIDED) and want.sent != got.sent:
            out.append(
                f"step {i} sent:\n    expected: {_show(want.sent)}\n    got:      "
                f"{_show(got.sent or '')}"
            )
        out.extend(_outcome_problems(i, want.received, got.received))
    return out
