"""Our own URIs: which MSRP URIs name this relay (sans-IO).

Rules (rfc-checklist §2.2, RFC 4975 §6.1; issue 12, item 9):
- The set is built from the listen addresses (msrp for tcp and ws, msrps for tls and wss),
  `use_path_addr` and `[msrp] aliases`. An alias with a scheme counts for that scheme only;
  one without, and use_path_addr (whose scheme Use-Path does not use, cmapops.py), count for
  every scheme we serve. An entry without a port counts on every listen port and on 2855.
- A URI is ours when its scheme (case-insensitive), host (an IP address by value, so
  `[2001:db8::1]` equals `[2001:0db8::0:1]`; a name case-insensitively, userinfo ignored),
  port and transport match an entry. A URI without a port means 2855 (RFC 4975 §6: what a
  connection to it would reach). The transport must be tcp (or absent), or ws when we listen
  on ws: or wss: (RFC 7977 §5.2: a WebSocket client names the relay with ;ws).
- The session-id is not compared: a relay's URI with any session-id still reaches the relay.
- A listen address on a wildcard host (0.0.0.0, ::) stands for every local address: the
  caller passes them in `local_hosts` (the worker reads them from the interfaces).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from urllib.parse import unquote

from ..protocol import LocalProtocolError, MsrpUri, parse_uri
from ..protocol.uri import MSRP_DEFAULT_PORT
from .address import ListenAddress

__all__ = ["SelfUris", "host_key"]

_HostKey = IPv4Address | IPv6Address | str
_Key = tuple[str, _HostKey, int]
_SCHEME = {"tcp": "msrp", "tls": "msrps", "ws": "msrp", "wss": "msrps"}
_WILDCARDS = frozenset({IPv4Address("0.0.0.0"), IPv6Address("::")})
_MEMO_MAX = 1024


def host_key(host: str) -> _HostKey:
    """A host as RFC 4975 §6.1 compares it: an IP address by value, a name decoded and
    case-folded."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ip_address(text)
    except ValueError:
        return unquote(text).lower()


@dataclass(frozen=True, slots=True)
class SelfUris:
    keys: frozenset[_Key]
    """(scheme, host key, port) of every URI that names us."""
    transports: frozenset[str] = frozenset({"tcp", ""})
    """The URI transports that reach us: tcp (or none), and ws when we listen on WebSocket."""
    _memo: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)
    """names(): the answer per URI without its session-id (they do not count)."""

    @classmethod
    def build(
        cls,
        listen: Sequence[ListenAddress],
        use_path_addr: str | None = None,
        aliases: Iterable[str] = (),
        local_hosts: Iterable[str] = (),
    ) -> SelfUris:
        schemes = sorted({_SCHEME[addr.proto] for addr in listen})
        ports = sorted({addr.port for addr in listen})
        keys: set[_Key] = set()
        locals_ = [host_key(h) for h in local_hosts]
        for addr in listen:
            host = host_key(addr.host)
            hosts = [host, *locals_] if host in _WILDCARDS else [host]
            keys.update((_SCHEME[addr.proto], h, addr.port) for h in hosts)
        entries = [(entry, True) for entry in aliases]
        if use_path_addr:
            entries.append((use_path_addr, False))  # its scheme is dropped: the AUTH's is used
        for entry, keep_scheme in entries:
            scheme, host, port = _split_entry(entry)
            for s in [scheme] if scheme and keep_scheme else schemes:
                # No port: our Use-Path has none either, and that means 2855 (RFC 4975 §6).
                keys.update((s, host, p) for p in ([port] if port else [*ports, MSRP_DEFAULT_PORT]))
        web = any(addr.proto in ("ws", "wss") for addr in listen)
        return cls(frozenset(keys), frozenset({"tcp", "", "ws"} if web else {"tcp", ""}))

    def matches(self, uri: MsrpUri) -> bool:
        """Whether `uri` names this relay (any session-id)."""
        if uri.proto.lower() not in self.transports:
            return False
        port = MSRP_DEFAULT_PORT if uri.port is None else uri.port
        try:
            host = host_key(uri.host)
        except ValueError:
            return False
        return (uri.scheme.lower(), host, port) in self.keys

    def names(self, uri: bytes) -> bool:
        """matches() for a path URI as the reader gave it (it parses: reader.py checks every
        path), memoised on the URI without its session-id: the relay route asks it for each
        connection whose first To-Path URI changed (ConnEnv.to_us remembers the last). The memo
        is bounded: a peer naming many hosts only empties it."""
        # The session-id runs from the "/" after the authority to the ";" (RFC 4975 §9); a
        # "/" or ";" in the authority would not parse (the reader checked).
        slash = uri.find(b"/", uri.find(b"://") + 3)
        semi = uri.find(b";", slash)
        key = uri if slash < 0 else uri[:slash] + (uri[semi:] if semi >= 0 else b"")
        memo = self._memo
        found = memo.get(key)
        if found is None:
            try:
                found = self.matches(parse_uri(uri.decode("utf-8", "surrogateescape")))
            except LocalProtocolError:
                found = False
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[key] = found
        return found

    def count(self, uris: Iterable[str]) -> int:
        """How many of `uris` (path elements) name us; one that does not parse is not ours."""
        found = 0
        for text in uris:
            try:
                found += self.matches(parse_uri(text))
            except LocalProtocolError:
                continue
        return found


def _split_entry(text: str) -> tuple[str, _HostKey, int | None]:
    """ "[msrp[s]://]host[:port]" (checked by checks.py) -> (scheme or "", host key, port)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if rest.startswith("["):
        close = rest.index("]")
        host, port_text = rest[: close + 1], rest[close + 2 :]
    else:
        host, _, port_text = rest.partition(":")
    return scheme.lower(), host_key(host), int(port_text) if port_text else None
