"""Normalising transcripts the way the golden files do.

Strategy: values that change from run to run are picked out of the frames themselves as they
are sent and received - transaction ids (first line of a sent frame), digest cnonces and
responses (Authorization), nonces (WWW-Authenticate), session ids (Use-Path), the padded body
of a size-sensitive frame - and each gets a numbered placeholder per kind in order of first
appearance (<TID1>, <SID1>, <BODY1>...). Ports are named by whose they are (<PORT:RELAY>,
<PORT:alice>, <PORT:nh>). The same extraction runs over a golden file's raw events, so a
live transcript and a recorded one are normalised by one rule, and a numbering mismatch is
itself a difference.

Nonces are numbered per challenge, not per value: each 401 gets the next <NONCEn>, and an
Authorization names the latest challenge that carried its nonce. A relay whose stateless
nonces can repeat (msrpd's were time + HMAC, equal within a second) would otherwise show a
timing-dependent difference; whether a nonce can be used twice is what the variant
auth_replayed_on_another_connection tests.

A digest challenge's opaque value (msrpd's: an HMAC of the run's secret) becomes <OPAQUE>.
Two SIP-only values are normalised too: the To tag and the Server header of the stateless
403, which name the implementation rather than describe its behaviour.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["Normaliser", "Placeholders", "body_of", "note_padded", "note_received", "note_sent"]

_TID = re.compile(r"^MSRP ([^ \r\n]+)", re.M)
_AUTHORIZATION = re.compile(r"^Authorization:[^\r\n]*", re.M)
_CNONCE = re.compile(r'cnonce="([^"]*)"')
_RESPONSE = re.compile(r'response="([^"]*)"')
_CHALLENGE_NONCE = re.compile(r'^(WWW-Authenticate:[^\r\n]*?[ ,]nonce=")([^"]*)"', re.M)
_ANSWER_NONCE = re.compile(r'^(Authorization:[^\r\n]*?[ ,]nonce=")([^"]*)"', re.M)
_USE_PATH = re.compile(r"^Use-Path: [^\r\n]*/([^/;\s]+);tcp\r$", re.M)
_BYTE_RANGE = re.compile(r"^Byte-Range: (1-([0-9]+)/([0-9]+))\r$", re.M)
_OPAQUE = re.compile(r'^(WWW-Authenticate:[^\r\n]*?[ ,]opaque=")[^"]*"', re.M)
_SIP_TO_TAG = re.compile(r"^(To:[^\r\n]*;tag=)[^\r\n;]*", re.M)
_SIP_SERVER = re.compile(r"^Server: [^\r\n]*", re.M)
# Applied longest-first so that no value is cut by a shorter one it contains.
_TOKEN_KINDS = frozenset({"TID"})


class Placeholders:
    """Raw values and their placeholders for one transcript."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # raw value -> placeholder
        self._values: dict[str, str] = {}  # placeholder -> raw value
        self._kinds: dict[str, str] = {}  # raw value -> kind
        self._ports: dict[str, str] = {}  # port number -> placeholder
        self._counts: Counter[str] = Counter()
        self.challenges: list[str] = []  # the nonce of every 401, in order (repeats kept)

    def add(self, kind: str, value: str) -> str:
        """Register `value` (once) as the next placeholder of `kind`; return its name."""
        if value in self._names:
            return self._names[value]
        self._counts[kind] += 1
        name = f"<{kind}{self._counts[kind]}>"
        self._names[value] = name
        self._values[name] = value
        self._kinds[value] = kind
        return name

    def port(self, owner: str, port: int | str) -> None:
        name = f"<PORT:{owner}>"
        self._ports[str(port)] = name
        self._values[name] = str(port)

    def value(self, name: str) -> str | None:
        """The raw value registered under `name`, or None."""
        return self._values.get(name)

    def name(self, value: str) -> str | None:
        return self._names.get(value) or self._ports.get(value)

    def values(self, kind: str) -> list[str]:
        return [v for v, k in self._kinds.items() if k == kind]

    def apply(self, text: str) -> str:
        for value in sorted(self._names, key=len, reverse=True):
            name = self._names[value]
            if self._kinds[value] in _TOKEN_KINDS:
                pattern = rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])"
                text = re.sub(pattern, name, text)
            else:
                text = text.replace(value, name)
        if self._ports:
            ports = "|".join(sorted(self._ports, key=len, reverse=True))
            text = re.sub(rf"(?<=:)({ports})(?![0-9])", lambda m: self._ports[m[1]], text)
        if text.startswith("SIP/2.0 "):
            text = _SIP_TO_TAG.sub(r"\1<SIPTAG>", text)
            text = _SIP_SERVER.sub("Server: <SERVER>", text)
        return text


def note_sent(ph: Placeholders, text: str) -> None:
    """Register the volatile values of a frame a client sent."""
    for tid in _TID.findall(text):
        ph.add("TID", tid)
    for header in _AUTHORIZATION.findall(text):
        for pattern, kind in ((_CNONCE, "CNONCE"), (_RESPONSE, "DIGEST")):
            found = pattern.search(header)
            if found:
                ph.add(kind, found[1])


def note_received(ph: Placeholders, text: str) -> None:
    """Register the volatile values of an item a client received (nonces, session ids)."""
    for _, nonce in _CHALLENGE_NONCE.findall(text):
        ph.challenges.append(nonce)
    for sessid in _USE_PATH.findall(text):
        ph.add("SID", sessid)


def body_of(text: str) -> tuple[str, str] | None:
    """(body, Byte-Range value) of a frame with a body, or None."""
    head, sep, rest = text.partition("\r\n\r\n")
    end = rest.rfind("\r\n-------")
    br = _BYTE_RANGE.search(head + "\r\n")
    if not sep or end < 0 or br is None:
        return None
    return rest[:end], br[1]


def note_padded(ph: Placeholders, text: str) -> None:
    """Register the body of a size-sensitive frame (padded per relay) and its Byte-Range."""
    found = body_of(text)
    if found:
        ph.add("BODY", found[0])
        ph.add("RANGE", found[1])


class Normaliser:
    """Normalises one transcript's texts; call it in transcript order (nonces are numbered
    as the challenges come)."""

    def __init__(self, ph: Placeholders) -> None:
        self.ph = ph
        self._latest: dict[str, str] = {}
        self._count = 0

    def sent(self, text: str) -> str:
        text = _ANSWER_NONCE.sub(lambda m: f'{m[1]}{self._latest.get(m[2], m[2])}"', text)
        return self.ph.apply(text)

    def received(self, text: str) -> str:
        def number(m: re.Match[str]) -> str:
            self._count += 1
            name = f"<NONCE{self._count}>"
            self._latest[m[2]] = name
            return f'{m[1]}{name}"'

        text = _OPAQUE.sub(r'\1<OPAQUE>"', _CHALLENGE_NONCE.sub(number, text))
        return self.ph.apply(text)
