"""Listen addresses and host[:port] text: core.listen, msrp.use_path_addr, metrics.listen.

Rules: an IPv6 host is written in brackets ("[::1]:2855") and kept without them, in compressed
form; an IPv4 host must be a dotted quad; anything else must be a hostname (RFC 1123 labels, 253
characters at most). A port is 1 to 65535. Every ValueError quotes the text it refuses and says
what is wrong. No I/O: a hostname is checked, never resolved.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal, cast, get_args

__all__ = ["ListenAddress", "Proto", "check_address", "parse_host_port", "parse_listen"]

Proto = Literal["tcp", "tls", "ws", "wss"]

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*", re.A)
_DOTTED = re.compile(r"[0-9.]+", re.A)
_PORT = re.compile(r"[0-9]{1,5}", re.A)


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One listening socket, as written in core.listen: "tcp:127.0.0.1:2855", "tls:[::1]:2856",
    "ws:127.0.0.1:2857"."""

    proto: Proto
    """Transport: tcp, tls (RFC 4975 §6 msrps), or WebSocket over TCP or TLS (ws, wss:
    RFC 7977)."""

    @property
    def secure(self) -> bool:
        """Over TLS ([tls] certificate): tls and wss."""
        return self.proto in ("tls", "wss")

    host: str
    """IP literal without brackets (IPv6 in compressed form), or a hostname."""

    port: int
    """TCP port, 1 to 65535."""

    @property
    def family(self) -> socket.AddressFamily:
        try:
            version = ipaddress.ip_address(self.host).version
        except ValueError:
            return socket.AF_INET  # a hostname: resolved as IPv4
        return socket.AF_INET6 if version == 6 else socket.AF_INET

    @property
    def uri_host(self) -> str:
        """host:port as in a URI authority, IPv6 in brackets (RFC 3986 §3.2.2)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def sock_text(self) -> str:
        """Kamailio's srcsock text, "proto:host:port"."""
        return f"{self.proto}:{self.uri_host}"

    def __str__(self) -> str:
        return self.sock_text


def parse_listen(text: str) -> ListenAddress:
    """Parse "proto:host:port" (proto tcp, tls, ws or wss, an IPv6 host in brackets).

    Raises:
        ValueError: with a message that quotes `text` and says what is wrong.
    """
    proto, sep, rest = text.partition(":")
    if not sep or proto not in get_args(Proto):
        raise ValueError(f"{text!r}: must be proto:host:port with proto tcp, tls, ws or wss")
    try:
        host, port = _split_host_port(rest, port_required=True)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    assert port is not None
    return ListenAddress(cast(Proto, proto), host, port)


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse "host:port" (an IPv6 host in brackets), as metrics.listen is written.

    Raises:
        ValueError: with a message that quotes `text` and says what is wrong.
    """
    try:
        host, port = _split_host_port(text, port_required=True)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    assert port is not None
    return host, port


def check_address(text: str, schemes: tuple[str, ...], *, port_required: bool) -> None:
    """Check "host[:port]", optionally after one of `schemes` (matched case-insensitively).

    Raises:
        ValueError: with a message that quotes `text` and says what is wrong.
    """
    rest = next((text[len(s) :] for s in schemes if text.lower().startswith(s)), text)
    if any(c.isspace() for c in text):
        raise ValueError(f"must not contain spaces, got {text!r}")
    if "/" in rest or ";" in rest:
        raise ValueError(f"must be host:port with no path or parameters, got {text!r}")
    try:
        _split_host_port(rest, port_required=port_required)
    except ValueError as exc:
        raise ValueError(f"{exc} in {text!r}") from None


def _split_host_port(text: str, *, port_required: bool) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("'[' without ']'")
        host, rest = _ipv6(text[1:close]), text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("text after ']' must be :port")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, None
        host = _host(host)
    if port_text is None:
        if port_required:
            raise ValueError("missing :port")
        return host, None
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def _ipv6(text: str) -> str:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise ValueError(f"not an IPv6 address in brackets: {text!r}") from None


def _host(text: str) -> str:
    if not text:
        raise ValueError("empty host")
    if ":" in text:
        raise ValueError("an IPv6 address must be in brackets, as in [::1]:2855")
    if _DOTTED.fullmatch(text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise ValueError(f"not an IPv4 address: {text!r}") from None
    if len(text) > 253 or not _HOSTNAME.fullmatch(text):
        raise ValueError(f"not an IP address or hostname: {text!r}")
    return text
