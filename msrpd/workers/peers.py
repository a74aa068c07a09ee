"""How the relay names a peer: `host:port` text and the connection registry's keys."""

from __future__ import annotations

__all__ = ["CLIENT_PREFIX", "format_peer", "registry_key", "source_host"]

CLIENT_PREFIX = "in:"


def format_peer(host: str, port: int) -> str:
    """`host:port`, IPv6 in brackets (RFC 3986 §3.2.2), as URIs and registry keys need."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def registry_key(peer_key: str, outbound: bool) -> str:
    """The connection registry's key for a connection to or from `peer_key`: connections the
    relay opened under the address itself, clients' connections under "in:" + the address,
    so relaying to a To-Path URI never finds a client's connection (issue 12)."""
    return peer_key if outbound else CLIENT_PREFIX + peer_key


def source_host(peer_key: str) -> str:
    """The host of `peer_key` ("tcp:192.0.2.1:40000" -> "192.0.2.1", "tls:[::1]:5" ->
    "[::1]"): what the limits count per source address (shm/addrs.py)."""
    return peer_key.partition(":")[2].rpartition(":")[0]
