"""Every frame recorded in the Kamailio transcripts, through the reader in every split.

Expected values come from an independent, deliberately naive parser (whole buffer, plain
splits) for well-formed frames, and from the table below for the malformed scenarios.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msrpd.protocol.status import Status

from .feed import Summary, feed, splits
from .golden import doubled_path

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
FILES = sorted(GOLDEN.glob("*/*.json"))
BAD = Status.UNINTELLIGIBLE

# What msrpd's reader makes of each malformed frame clients sent (Kamailio: reference §15).
MALFORMED: dict[str, str] = {
    "first_line_no_method": "invalid",  # Kamailio crashes; we answer 400 and go on
    "header_without_colon": "invalid",  # Kamailio closes silently
    "malformed_from_before_to": "invalid",
    "malformed_missing_from_path": "invalid",
    "malformed_missing_to_path": "invalid",
    "lf_only_line_endings": "error",  # Kamailio hangs; we answer 400 and close
    "malformed_garbage_bytes": "error",  # no transaction id: close
    "non_msrp_first_line": "error",
    "malformed_bad_end_line": "incomplete",  # the frame has not ended; EOF mid-frame
    "malformed_end_line_no_flag": "incomplete",
}


def naive(raw: bytes) -> Summary:
    """Parse one well-formed frame the simple way."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    body = None
    if sep:
        body = rest[: rest.rindex(b"\r\n-------")]
    else:
        *lines, end_line, empty = lines  # bodiless: the end-line closes the head
        assert end_line.startswith(b"-------") and empty == b""
    flag = raw[-3:-2]
    words = first.split(b" ", 3)
    headers = tuple((n, v.strip()) for n, _, v in (line.partition(b":") for line in lines))
    values = {n.lower(): v for n, v in headers}
    to_path = tuple(values[b"to-path"].decode().split())
    from_path = tuple(values[b"from-path"].decode().split())
    if words[2].isdigit() and len(words[2]) == 3:
        reason = words[3] if len(words) > 3 else b""
        return (
            "frame",
            words[1],
            None,
            int(words[2]),
            reason,
            flag,
            None,
            headers,
            to_path,
            from_path,
        )
    return ("frame", words[1], words[2], None, None, flag, body, headers, to_path, from_path)


def _raw(event: dict) -> bytes | None:
    raw = event.get("raw")
    if isinstance(raw, str):
        return raw.encode("latin-1")  # the recorder stored each byte as one code point
    return None  # a huge frame stored as head + tail around elided filler


def frames_of(path: Path) -> list[tuple[str, bytes]]:
    data = json.loads(path.read_text())
    out = []
    for event in data["events"]:
        raw = _raw(event)
        if raw is not None and (event["type"] == "send" or event.get("item") == "frame"):
            out.append((event["type"], raw))
    return out


def expected(scenario: str, raw: bytes) -> list[Summary]:
    # The scenarios' set-up AUTHs and trailing probes are well formed.
    setup = raw.split(b"\r\n", 1)[0].endswith(b" AUTH") or b"Message-ID: probe\r\n" in raw
    kind = None if setup else MALFORMED.get(scenario)
    tid = raw.split(b" ")[1].split(b"\r")[0].split(b"\n")[0]
    if kind is None and doubled_path(raw):
        is_request = not raw.split(b"\r\n", 1)[0].split(b" ")[2].isdigit()
        return [("invalid", tid, BAD, is_request), ("closed",)]
    if raw.startswith(b"OPTIONS "):
        return [("sip", raw), ("closed",)]
    if kind == "invalid":
        return [("invalid", tid, BAD, True), ("closed",)]
    if kind == "error":
        return [("error", BAD, tid if raw.startswith(b"MSRP ") else None)]
    if kind == "incomplete":
        return [("error", BAD, tid)]
    return [naive(raw), ("closed",)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_frames_in_every_split(path: Path) -> None:
    scenario = path.stem
    frames = frames_of(path)
    assert frames, "every transcript holds at least one MSRP frame"
    for direction, raw in frames:
        want = expected(scenario, raw)
        if direction == "recv" and not doubled_path(raw):
            want = [naive(raw), ("closed",)]
        for name, sizes in splits(len(raw)).items():
            assert feed(raw, sizes) == want, (direction, name)


def test_golden_corpus_is_complete() -> None:
    assert len(FILES) == 4 * 39
    scenarios = {p.stem for p in FILES}
    assert set(MALFORMED) <= scenarios
