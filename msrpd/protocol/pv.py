"""The 21 `$msrp(key)` values of Kamailio's msrp module, for routing scripts.

Rules: semantics as reference §4, with msrpd's fixes: `srcaddr` puts IPv6 addresses in
brackets so it can be fed back to set_dst; a streamed frame (body over the whole-frame limit)
has no `buf`, `buflen`, `body` or `bodylen` (None: not known when the script runs).
Text values are str (UTF-8, undecodable bytes kept by surrogateescape); `buf` and `body` are
bytes, since bodies are binary; counts and codes are int. A missing value is None ($null).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import LocalProtocolError
from .frame import Frame
from .uri import parse_uri

__all__ = ["MSRP_PV_KEYS", "ConnInfo", "PvValue", "msrp_pv"]

PvValue = str | int | bytes | None


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What the worker knows of the connection a frame arrived on."""

    srcaddr: str
    """`msrp[s]://ip:port` of the peer; IPv6 in brackets."""
    srcsock: str
    """The local socket, `proto:ip:port`, e.g. `tcp:127.0.0.1:2855`."""
    conid: int | None
    """The connection id, or None when the frame did not come from a connection."""
    node: bool = False
    """A link from another node of the cluster: its TLS certificate was issued by a CA of
    [cluster] node_ca (cluster/nodecerts.py). A frame from it is never sent on to a node."""


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _nth(path: list[str], index: int) -> str | None:
    return path[index] if -len(path) <= index < len(path) else None


def _buf(frame: Frame) -> bytes | None:
    return None if frame.streamed else frame.buf


def _body(frame: Frame) -> bytes | None:
    # Kamailio's body includes the CRLF before the end-line (reference §2.3).
    if frame.streamed or not frame.has_body:
        return None
    return frame.buf[frame.body_start : frame.end_start]


def _bodylen(frame: Frame) -> int | None:
    if frame.streamed:
        return None
    return frame.end_start - frame.body_start if frame.has_body else 0


def _sessid(frame: Frame) -> str | None:
    try:
        session = parse_uri(frame.to_path[0]).session
    except LocalProtocolError:
        return None
    return session or None


_FRAME_KEYS: dict[str, Callable[[Frame], PvValue]] = {
    "buf": _buf,
    "buflen": lambda f: None if f.streamed else len(f.buf),
    "body": _body,
    "bodylen": _bodylen,
    "hdrs": lambda f: _text(f.hdrs),
    "transid": lambda f: _text(f.tid),
    "method": lambda f: _text(f.method),
    "code": lambda f: f.code,
    "reason": lambda f: _text(f.reason),
    "msgid": lambda f: _text(f.message_id),
    "crthop": lambda f: _nth(f.to_path, 0),
    "nexthop": lambda f: _nth(f.to_path, 1),
    "lasthop": lambda f: _nth(f.to_path, -1),
    "prevhop": lambda f: _nth(f.from_path, 0),
    "firsthop": lambda f: _nth(f.from_path, -1),
    "nexthops": lambda f: f.to_count - 1,
    "prevhops": lambda f: len(f.from_path),
    "sessid": _sessid,
}

_CONN_KEYS: dict[str, Callable[[ConnInfo], PvValue]] = {
    "srcaddr": lambda c: c.srcaddr,
    "srcsock": lambda c: c.srcsock,
    "conid": lambda c: c.conid,
}

MSRP_PV_KEYS: tuple[str, ...] = (*_FRAME_KEYS, *_CONN_KEYS)


def msrp_pv(frame: Frame, key: str, conn: ConnInfo | None = None) -> PvValue:
    """The value of `$msrp(key)` for `frame`.

    Raises:
        KeyError: `key` is not one of the 21 names (case-sensitive, as in Kamailio, where an
            unknown key is a config error).
    """
    getter = _FRAME_KEYS.get(key)
    if getter is not None:
        return getter(frame)
    conn_getter = _CONN_KEYS[key]
    return None if conn is None else conn_getter(conn)
