"""The golden scenarios as replayable plans, and the frames rebuilt for a live relay.

Strategy: a golden file's events are the plan. "connect" opens a named client connection,
"send" sends the recorded raw frame, used as a template, and the "recv"/"eof" events after a
send say how many items to wait for on each connection (a hint for speed only: what arrives
is what is recorded). A listener is opened for each recorded port no client connected from
(the next hop of auth_with_nexthop). Where the recorder noted that the relay had closed a
connection before its probe could be sent, the probe (a SEND to an unknown session, in the
recorder's shape) is added at the end: Kamailio's run does not play it (closed), msrpd's run
shows whether the connection still works.

Rebuilding a template for a live relay:
- the recorded relay and client ports become the live ones;
- recorded session ids and nonces become the live ones with the same placeholder number;
- transaction ids are fresh (same length), except one the golden file did not normalise,
  which is input and stays as recorded: Kamailio 5.6.3 crashes on "MSRP flm00001" with no
  method every time (first_line_no_method) but mostly hangs on random ids;
- a digest is recomputed over the live nonce with a fresh cnonce: with the right password
  when the recorded digest was right (checked against the recorded nonce), a wrong one when
  it was wrong, over the realm and uri the recording used;
- a frame of a size-sensitive scenario (`frame_len`: Kamailio's 11,239 and 16,384-byte
  limits) keeps its recorded length exactly: the body is padded or cut, since live session
  ids differ in length from the recorded ones;
- an elided frame (a body over the recorder's cap) is rebuilt to its full length with filler.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from msrpd.protocol import digest as dg

from .normalise import Placeholders, body_of, note_padded, note_received, note_sent

__all__ = ["GOLDEN", "PASSWORD", "REALM", "USERS", "Connect", "Scenario", "Send", "load", "names"]

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "cmap"
REALM = "myrealm"
PASSWORD = "xyz123"
USERS = ("alice", "bob")
WRONG_PASSWORD = "not-xyz123"
PROBE = (
    "MSRP probe001 SEND\r\n"
    "To-Path: msrp://127.0.0.1:{relay}/no-such-session;tcp msrp://127.0.0.1:9/x;tcp\r\n"
    "From-Path: msrp://127.0.0.1:{port}/alicesess;tcp\r\n"
    "Message-ID: probe\r\nByte-Range: 1-5/5\r\nContent-Type: text/plain\r\n\r\n"
    "probe\r\n-------probe001$\r\n"
)
_NOT_SENT = re.compile(r"probe: (\w+) already closed by peer, probe not sent")
_AUTHORIZATION = re.compile(r"^Authorization: ([^\r\n]*)", re.M)
_FIRST_LINES = re.compile(r"^MSRP ([^ \r\n]+)", re.M)
_FILLER = string.hexdigits[:16] * 64


@dataclass(frozen=True)
class Connect:
    conn: str


@dataclass(frozen=True)
class Send:
    conn: str
    template: str
    expect: dict[str, int] = field(default_factory=dict)
    golden: str | None = None  # the recorded raw text; None when elided or added (probe)
    probe: bool = False
    digest_ok: bool | None = None
    # Resend the bytes of the n-th send built so far, with fresh transaction ids only.
    replay_of: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    data: dict[str, Any]
    actions: tuple[Connect | Send, ...]
    listeners: tuple[str, ...]
    relay_port: int
    ports: dict[str, int]
    frame_len: int | None

    @property
    def sends(self) -> list[Send]:
        return [a for a in self.actions if isinstance(a, Send)]

    @cached_property
    def kept_tids(self) -> frozenset[str]:
        """Recorded transaction ids the golden file left as they are (not <TIDn>)."""
        normalised = {v for k, v in self.data["placeholders"].items() if k.startswith("<TID")}
        recorded = {t for s in self.sends if s.golden for t in _FIRST_LINES.findall(s.golden)}
        return frozenset(recorded - normalised)

    @cached_property
    def golden_placeholders(self) -> Placeholders:
        """The recorded transcript's placeholders, found by the live rule (normalise.py)."""
        ph = Placeholders()
        ph.port("RELAY", self.relay_port)
        for owner, port in self.ports.items():
            ph.port(owner, port)
        for event in self.data["events"]:
            raw = event.get("raw")
            if not isinstance(raw, str):
                continue
            if event["type"] == "send":
                note_sent(ph, raw)
                if self.frame_len is not None and event["len"] == self.frame_len:
                    note_padded(ph, raw)
            elif event["type"] == "recv":
                note_received(ph, raw)
        return ph

    def unknown_sessions(self) -> set[str]:
        """Session ids the scenario names on the relay that the relay never issued."""
        issued = set(self.golden_placeholders.values("SID"))
        pattern = re.compile(rf"127\.0\.0\.1:{self.relay_port}/([^/;\s]+);")
        found = {m for s in self.sends for m in pattern.findall(s.template)}
        return found - issued


def _unelide(raw: dict[str, Any]) -> str:
    count = int(raw["elided_chars"])
    filler = (_FILLER * (count // len(_FILLER) + 1))[:count]
    return str(raw["head"]) + filler + str(raw["tail"])


def _digest_ok(template: str) -> bool | None:
    """Whether the recorded digest is right (over the recorded nonce); None without one."""
    m = _AUTHORIZATION.search(template)
    if m is None:
        return None
    creds = dg.parse_authorization(m[1])
    expected = dg.response_for(creds, dg.ha1(creds.username, creds.realm, PASSWORD))
    return expected == creds.response


def _expectations(events: list[dict[str, Any]], start: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events[start + 1 :]:
        if event["type"] == "send":
            break
        if event["type"] in ("recv", "eof"):
            counts[event["conn"]] = counts.get(event["conn"], 0) + 1
    return counts


@cache
def load(name: str) -> Scenario:
    data = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    events = data["events"]
    ports = {
        key[len("<PORT:") : -1]: int(value)
        for key, value in data["placeholders"].items()
        if key.startswith("<PORT:") and key != "<PORT:RELAY>"
    }
    actions: list[Connect | Send] = []
    connected: list[str] = []
    for i, event in enumerate(events):
        if event["type"] == "connect":
            actions.append(Connect(event["conn"]))
            connected.append(event["conn"])
        elif event["type"] == "send":
            raw = event["raw"]
            template = raw if isinstance(raw, str) else _unelide(raw)
            actions.append(
                Send(
                    event["conn"],
                    template,
                    _expectations(events, i),
                    golden=raw if isinstance(raw, str) else None,
                    digest_ok=_digest_ok(template),
                )
            )
    relay_port = int(data["relay"]["port"])
    for note in data["notes"]:
        m = _NOT_SENT.search(note)
        if m:
            probe = PROBE.format(relay=relay_port, port=ports[m[1]])
            actions.append(Send(m[1], probe, {m[1]: 1}, probe=True))
    return Scenario(
        name=name,
        description=data["description"],
        data=data,
        actions=tuple(actions),
        listeners=tuple(p for p in ports if p not in connected),
        relay_port=relay_port,
        ports=ports,
        frame_len=data.get("frame_len"),
    )


def names() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.json"))


def _fresh_tid(old: str) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in old)


class Builder:
    """Rebuilds a scenario's templates for one live relay run."""

    def __init__(self, scenario: Scenario, relay_port: int, ph: Placeholders) -> None:
        self.scenario = scenario
        self.relay_port = relay_port
        self.ph = ph  # the live run's placeholders: live nonces, session ids, ports
        self.golden = scenario.golden_placeholders
        self.tids: dict[str, str] = {}  # recorded transaction id -> fresh one
        self.built: list[str] = []  # every send's text as built, in order

    def _live(self, recorded: str) -> str:
        """The live value under the placeholder that `recorded` has in the golden file."""
        name = self.golden.name(recorded)
        live = self.ph.value(name) if name else None
        return recorded if live is None else live

    def _ports(self, text: str) -> str:
        ports = {str(self.scenario.relay_port): str(self.relay_port)}
        for owner, port in self.scenario.ports.items():
            live = self.ph.value(f"<PORT:{owner}>")
            if live is not None:
                ports[str(port)] = live
        pattern = "|".join(map(re.escape, ports))
        return re.sub(rf"(?<=127\.0\.0\.1:)({pattern})(?![0-9])", lambda m: ports[m[1]], text)

    def _authorization(self, text: str, digest_ok: bool) -> str:
        m = _AUTHORIZATION.search(text)
        assert m is not None
        value = m[1]
        creds = dg.parse_authorization(value)
        nonce = creds.nonce
        if nonce in self.golden.challenges:
            # The recorded nonce came with the golden file's n-th challenge: use the live n-th.
            n = len(self.golden.challenges) - 1 - self.golden.challenges[::-1].index(nonce)
            nonce = self.ph.challenges[n] if n < len(self.ph.challenges) else nonce
        cnonce = secrets.token_hex(max(1, len(creds.cnonce or "") // 2))
        creds = replace(creds, nonce=nonce, cnonce=cnonce)
        password = PASSWORD if digest_ok else WRONG_PASSWORD
        response = dg.response_for(creds, dg.ha1(creds.username, creds.realm, password))
        value = re.sub(r'(?<=[ ,])nonce="[^"]*"', f'nonce="{nonce}"', value)
        value = re.sub(r'cnonce="[^"]*"', f'cnonce="{cnonce}"', value)
        value = re.sub(r'response="[^"]*"', f'response="{response}"', value)
        return text[: m.start(1)] + value + text[m.end(1) :]

    @staticmethod
    def _pad(text: str, length: int) -> str:
        """`text` with its body cut or repeated (and Byte-Range to match) to `length` bytes."""
        for _ in range(3):
            delta = length - len(text.encode("latin-1"))
            if delta == 0:
                return text
            found = body_of(text)
            assert found is not None, "a size-sensitive frame without a body"
            body, byte_range = found
            size = len(body) + delta
            head, sep, rest = text.partition("\r\n\r\n")
            head = head.replace(f"Byte-Range: {byte_range}", f"Byte-Range: 1-{size}/{size}")
            new_body = (body * (size // max(1, len(body)) + 1))[:size]
            text = head + sep + new_body + rest[len(body) :]
        raise AssertionError(f"could not pad the frame to {length} bytes")

    def _fresh_tids(self, text: str) -> str:
        for old in _FIRST_LINES.findall(text):
            fresh = old if old in self.scenario.kept_tids else _fresh_tid(old)
            self.tids.setdefault(old, fresh)
        if not self.tids:
            return text
        pattern = "|".join(map(re.escape, sorted(self.tids, key=len, reverse=True)))
        bounded = rf"(?<![A-Za-z0-9])({pattern})(?![A-Za-z0-9])"
        return re.sub(bounded, lambda m: self.tids[m[1]], text)

    def build(self, send: Send) -> bytes:
        if send.replay_of is not None:
            text = self.built[send.replay_of]
            for tid in _FIRST_LINES.findall(text):
                fresh = _fresh_tid(tid)
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(tid)}(?![A-Za-z0-9])", fresh, text)
            self.built.append(text)
            note_sent(self.ph, text)
            return text.encode("latin-1")
        text = self._ports(send.template)
        for sessid in self.golden.values("SID"):
            text = text.replace(sessid, self._live(sessid))
        text = self._fresh_tids(text)
        if send.digest_ok is not None:
            text = self._authorization(text, send.digest_ok)
        size_sensitive = self.scenario.frame_len
        recorded_len = len(send.template.encode("latin-1"))
        if size_sensitive is not None and recorded_len == size_sensitive:
            text = self._pad(text, size_sensitive)
            note_padded(self.ph, text)
        self.built.append(text)
        note_sent(self.ph, text)
        return text.encode("latin-1")

    def note(self, item: str) -> None:
        note_received(self.ph, item)
