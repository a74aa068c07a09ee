"""Loading the recorded Kamailio transcripts (tests/fixtures/golden/<config>/<scenario>.json).

Each transcript's `events` hold what the clients sent ("send") and received ("recv") on named
connections. `raw` is the exact wire text with one code point per byte (the recorder decoded
the bytes as latin-1: the 423 garbage and the binary-garbage scenario hold bytes 0x80-0xff, and
`len` counts bytes), so it is encoded back with latin-1, never utf-8. Frames over the recorder's
size cap are stored as {head, tail, elided_chars} instead of a string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msrpd.protocol.errors import RemoteProtocolError
from msrpd.protocol.events import NEED_DATA
from msrpd.protocol.limits import ReaderLimits
from msrpd.protocol.reader import Event, FrameReader

GOLDEN_DIR = Path(__file__).parent.parent / "fixtures" / "golden"
CONFIGS = ("cmap", "cmap-doc", "htable", "htable-doc")


def golden_files() -> list[Path]:
    """Every transcript of the four configs, in a stable order."""
    return sorted(path for config in CONFIGS for path in (GOLDEN_DIR / config).glob("*.json"))


def file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


# The -doc configs set use_path_addr to "msrp://127.0.0.1:5060" and Kamailio writes Use-Path
# "msrp://msrp://..." (reference K8); clients that echo it send paths that are not MSRP URIs,
# and msrpd's reader refuses them (RFC 4975 §9: 400 for a request, a response is dropped).
DOUBLED_SCHEME = b"msrp://msrp://"


def doubled_path(raw: bytes) -> bool:
    """Whether the frame's To-Path or From-Path holds Kamailio's doubled scheme."""
    lines = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:3]
    return any(DOUBLED_SCHEME in line for line in lines)


def wire(text: str) -> bytes:
    """A recorded `raw` string back to the bytes that crossed the wire."""
    return text.encode("latin-1")


@dataclass(frozen=True)
class Wire:
    """One send or recv event.

    Attributes:
        index: position in the transcript's event list (events are in time order).
        kind: "send" or "recv".
        conn: the connection's label (alice, bob, nh...).
        raw: the bytes; for an elided huge frame, only the recorded head.
        elided: True when the transcript cut the middle of the frame out.
        length: the byte count the recorder reported for the whole event.
        item: for recv events, "frame" or "junk" (the recorder could not parse it).
    """

    index: int
    kind: str
    conn: str
    raw: bytes
    elided: bool
    length: int
    item: str | None


@dataclass(frozen=True)
class Transcript:
    config: str
    scenario: str
    data: dict[str, Any]
    wires: list[Wire]

    @property
    def sends(self) -> list[Wire]:
        return [w for w in self.wires if w.kind == "send"]

    @property
    def recvs(self) -> list[Wire]:
        return [w for w in self.wires if w.kind == "recv"]


def load(path: Path) -> Transcript:
    data = json.loads(path.read_text(encoding="utf-8"))
    wires = []
    for index, event in enumerate(data["events"]):
        if event["type"] not in ("send", "recv"):
            continue
        raw = event["raw"]
        elided = isinstance(raw, dict)
        wires.append(
            Wire(
                index=index,
                kind=event["type"],
                conn=event["conn"],
                raw=wire(raw["head"] if elided else raw),
                elided=elided,
                length=event["len"],
                item=event.get("item"),
            )
        )
    return Transcript(path.parent.name, data["scenario"], data, wires)


def read_all(data: bytes, limits: ReaderLimits | None = None) -> list[Event | Exception]:
    """Everything a fresh FrameReader makes of `data` (no EOF): the events, then the
    RemoteProtocolError if the reader gave up. An incomplete frame gives no event."""
    reader = FrameReader(limits)
    reader.receive_data(data)
    out: list[Event | Exception] = []
    try:
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
    except RemoteProtocolError as exc:
        out.append(exc)
    return out


@dataclass(frozen=True)
class WireResponse:
    """A response split the naive way (independent of msrpd's reader)."""

    tid: bytes
    code: int
    reason: bytes
    header_lines: list[bytes]  # CRLF-terminated, in order


def first_line_words(raw: bytes) -> list[bytes]:
    """The first line split on single spaces into at most 4 words (MSRP, tid, x, rest)."""
    return raw.split(b"\r\n", 1)[0].split(b" ", 3)


def is_response_line(raw: bytes) -> bool:
    words = first_line_words(raw)
    return len(words) >= 3 and words[0] == b"MSRP" and len(words[2]) == 3 and words[2].isdigit()


def split_response(raw: bytes) -> WireResponse:
    """First line and header lines of a well-formed bodiless response."""
    words = first_line_words(raw)
    assert is_response_line(raw), raw[:80]
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b"-------" + words[1] + b"$", raw[-40:]
    return WireResponse(
        tid=words[1],
        code=int(words[2]),
        reason=words[3] if len(words) > 3 else b"",
        header_lines=[line + b"\r\n" for line in lines[1:-2]],
    )


def header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()
