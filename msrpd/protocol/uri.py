"""MSRP URIs: parsing, the `{msrpuri.key}` view, and equivalence (sans-IO).

Rules: the syntax is RFC 4975 §9 (authority from RFC 3986), comparison is RFC 4975 §6.1, and the
connect default is RFC 4975 §6 (port 2855). Parsing is liberal only where said below: the
transport is optional and URI-parameters are any non-empty `name[=value]` without `;` or blanks.
Every failure is a LocalProtocolError (400). Where msrpd differs from Kamailio's msrp_parse_uri:
- '@' after the first '/' or ';' is plain text: Kamailio reparses the host from after it.
- `;wss` gives proto "wss", params "": Kamailio gives proto "ws", params "wss".
- `msrp://[::1]/s;tcp` parses with port None: Kamailio rejects an IPv6 host without a port.
- params is the whole parameter text, transport included, for every transport as soon as a
  parameter follows it (`;tls;x=1` -> "tls;x=1"): Kamailio does that only for tcp and ws*.
- ';' is not allowed in userinfo (`msrp://u;p=1@h/s;tcp` is a 400): Kamailio parses it and sets
  neither user nor userinfo. user is always userinfo cut at the first ':'.
- No port means 2855 when connecting: Kamailio does a SIP SRV lookup, then 5060/5061.
- Outer whitespace is stripped; whitespace, controls or non-ASCII inside are a 400: Kamailio
  trims only the last component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from .errors import LocalProtocolError

__all__ = [
    "MSRPURI_KEYS",
    "MSRP_DEFAULT_PORT",
    "MsrpUri",
    "PathCheck",
    "parse_uri",
    "path_problem",
    "split_path",
]

MSRP_DEFAULT_PORT = 2855
MSRPURI_KEYS: tuple[str, ...] = (
    "scheme",
    "user",
    "userinfo",
    "host",
    "port",
    "session",
    "proto",
    "params",
)

_OUTER_WS = " \t\r\n\x0b\x0c"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = r"%[0-9A-Fa-f]{2}"
# RFC 3986 userinfo and reg-name characters (unreserved, sub-delims); ';' is left out of both.
_USERINFO = rf"(?:[A-Za-z0-9\-._~!$&'()*+,=:]|{_PCT})*"
_REG_NAME = rf"(?:[A-Za-z0-9\-._~!$&'()*+,=]|{_PCT})+"
# A parameter is any visible ASCII but ';', as name[=value] with a non-empty name.
_PARAM = r"[\x21-\x3a\x3c\x3e-\x7e]+(?:=[\x21-\x3a\x3c-\x7e]*)?"
_URI_RE = re.compile(
    rf"""
    (?P<scheme>(?i:msrps?))://
    (?:(?P<userinfo>{_USERINFO})@)?
    (?P<host>\[[0-9A-Fa-f:.]+\]|{_REG_NAME})
    (?::(?P<port>[0-9]{{1,5}}))?
    (?:/(?P<session>[A-Za-z0-9\-._~+=/]+))?
    (?:;(?P<params>(?P<proto>[A-Za-z0-9]+)(?P<extra>(?:;{_PARAM})*)))?
    """,
    re.ASCII | re.VERBOSE,
)
# The same URI grammar on bytes, for a whole path value: `MSRP-URI *(SP MSRP-URI)` (RFC 4975
# §9; runs of SP/HTAB as split_path splits). Character runs are possessive (each is followed by
# a character its class excludes), so a hostile value costs linear time; groups are not (Python
# 3.11 mismatches some possessive groups). The port is checked for 1..65535 here too; an IPv6
# literal still needs parse_uri (path_problem does it).
_PORT_1_65535 = (
    r"(?=[0-9]{1,5}(?![0-9]))0*+"
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)
_URI_SHAPE = (
    rf"(?i:msrps?)://"
    rf"(?:(?:[A-Za-z0-9\-._~!$&'()*+,=:]++|{_PCT})*@)?"
    rf"(?:\[[0-9A-Fa-f:.]++\]|(?:[A-Za-z0-9\-._~!$&'()*+,=]++|{_PCT})+)"
    rf"(?::{_PORT_1_65535})?"
    r"(?:/[A-Za-z0-9\-._~+=/]++)?"
    r"(?:;[A-Za-z0-9]++(?:;[\x21-\x3a\x3c\x3e-\x7e]++(?:=[\x21-\x3a\x3c-\x7e]*+)?)*)?"
)
_PATH_RE = re.compile(f"{_URI_SHAPE}(?:[ \t]++{_URI_SHAPE})*".encode())
_PCT_RE = re.compile(_PCT)
_PATH_ELEMENT_RE = re.compile(r"[^ \t]+")
_SHOW_MAX = 80

_HostKey = IPv4Address | IPv6Address | str


@dataclass(frozen=True, slots=True)
class MsrpUri:
    """One parsed MSRP URI; every text field is as written and "" when the part is absent."""

    raw: str
    scheme: str
    userinfo: str
    user: str
    host: str
    port: int | None
    session: str
    proto: str
    params: str

    @property
    def secure(self) -> bool:
        """True for msrps: the hop must use TLS (RFC 4975 §6)."""
        return self.scheme.lower() == "msrps"

    def key(self, name: str) -> str:
        """The `{msrpuri.<name>}` value; name is case-insensitive, unknown names are a KeyError."""
        wanted = name.lower() if name.isascii() else ""
        if wanted not in MSRPURI_KEYS:
            raise KeyError(name)
        if wanted == "port":
            return "" if self.port is None else str(self.port)
        value: str = getattr(self, wanted)
        return value

    def address(self) -> tuple[str, int]:
        """(host without brackets, port or 2855) to connect to."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, MSRP_DEFAULT_PORT if self.port is None else self.port

    def same_as(self, other: MsrpUri) -> bool:
        """RFC 4975 §6.1 equivalence (userinfo and parameters other than transport ignored)."""
        return (
            self.scheme.lower() == other.scheme.lower()
            and self.port == other.port
            and self.session == other.session
            and self.proto.lower() == other.proto.lower()
            and _host_key(self.host) == _host_key(other.host)
        )


def parse_uri(text: str | bytes) -> MsrpUri:
    """Parse one MSRP URI; any failure is a LocalProtocolError (400)."""
    raw = _as_text(text, "MSRP URI").strip(_OUTER_WS)
    match = _URI_RE.fullmatch(raw)
    if match is None:
        raise LocalProtocolError(f"malformed MSRP URI: {_show(raw)}")
    host: str = match["host"]
    if host.startswith("["):
        _check_ipv6(host, raw)
    port_text: str | None = match["port"]
    userinfo: str = match["userinfo"] or ""
    return MsrpUri(
        raw=raw,
        scheme=match["scheme"],
        userinfo=userinfo,
        user=userinfo.partition(":")[0],
        host=host,
        port=None if port_text is None else _check_port(port_text, raw),
        session=match["session"] or "",
        proto=match["proto"] or "",
        params=match["params"] if match["extra"] else "",
    )


def split_path(value: str | bytes) -> list[str]:
    """Split a To-Path/From-Path value into URI texts on runs of SP/HTAB."""
    return _PATH_ELEMENT_RE.findall(_as_text(value, "path header"))


def path_problem(value: bytes, name: str) -> str | None:
    """Why a To-Path or From-Path value (`name`) is not a list of MSRP URIs that parse_uri
    accepts, or None when it is one (then split_path cannot fail on it either: it is ASCII)."""
    if _PATH_RE.fullmatch(value) is not None:
        if b"[" not in value:
            return None
        try:  # an IPv6 literal: the regex checked its characters, parse_uri checks the address
            for uri in split_path(value):
                parse_uri(uri)
            return None
        except LocalProtocolError as exc:
            return f"{name}: {exc.message}"
    return f"{name} is not a list of MSRP URIs (RFC 4975 §9)"


class PathCheck:
    """path_problem for one connection's frames, remembering the last good pair: the frames
    of a session repeat their paths, so the usual frame costs one comparison, not a match.
    Memory: one header span, within the reader's max_head."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = b""

    def problem(
        self,
        buf: bytes | bytearray,
        to_span: tuple[int, int, int],
        from_span: tuple[int, int, int],
    ) -> str | None:
        """Check the To-Path and From-Path values of the frame in `buf` (spans as the reader
        gives them: value start, end of the first URI, value end)."""
        start, end = to_span[0], from_span[2]
        last = self._last
        if end - start == len(last) and _holds(buf, start, last):
            return None  # both values, and the line break between them, as last time
        problem = path_problem(bytes(buf[start : to_span[2]]), "To-Path") or path_problem(
            bytes(buf[from_span[0] : end]), "From-Path"
        )
        if problem is None:
            self._last = bytes(buf[start:end])
        return problem


def _holds(buf: bytes | bytearray, start: int, part: bytes) -> bool:
    """buf.startswith(part, start). Compiled, for bytes, a slice compared costs a third of
    that call (a generic one: it parses its arguments)."""
    if isinstance(buf, bytes):
        return buf[start : start + len(part)] == part
    return buf.startswith(part, start)


def _as_text(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalProtocolError(f"{what} is not UTF-8: {exc.reason}") from None


def _check_ipv6(host: str, raw: str) -> None:
    try:
        IPv6Address(host[1:-1])
    except ValueError:
        raise LocalProtocolError(f"bad IPv6 literal in MSRP URI: {_show(raw)}") from None


def _check_port(port_text: str, raw: str) -> int:
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise LocalProtocolError(f"port out of range in MSRP URI: {_show(raw)}")
    return port


def _host_key(host: str) -> _HostKey:
    """The host as §6.1 compares it: an address by value, else decoded and case-folded text."""
    if host.startswith("["):
        return IPv6Address(host[1:-1])
    text = _PCT_RE.sub(_decode_unreserved, host) if "%" in host else host
    try:
        return IPv4Address(text)
    except ValueError:
        return text.lower()


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match[0][1:], 16))
    return char if char in _UNRESERVED else match[0].upper()


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX] + "...")
