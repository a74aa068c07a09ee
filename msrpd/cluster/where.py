"""Where is a token: the messages a worker and its node's cluster agent exchange on
run_dir/cluster-where.sock, a SOCK_SEQPACKET socket (sans-IO: the codec alone, tested alone).

A worker that meets a well-formed token its cmap does not hold asks the agent which other node
holds it (finder.py); the agent reads the directory and the registry in Redis (owners.py).

Rules:
- A question is `<id> <token>`; its answer `<id> <token> <status>[ <addr>]`, status `found`
  (then `addr`: the node's Use-Path address, host:port), `none` (no other node holds it: not
  in the directory, this node's, or its node is gone from the registry) or `down` (Redis is
  not answering; counted as a failed lookup). ASCII, one message each.
- An id is the asking worker's (1 to 16 hex digits, its own counter); a token is what
  cmapops.session_of() read from the To-Path URI: 1 to SESSID_MAX characters of RFC 4975
  §9's session-id alphabet, never a space. Anything else is refused (ValueError):
  the agent answers nothing to it, the worker drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DOWN",
    "FOUND",
    "NONE",
    "Answer",
    "decode_answer",
    "decode_ask",
    "encode_answer",
    "encode_ask",
    "valid_addr",
    "valid_token",
]

FOUND: Final = "found"
NONE: Final = "none"
DOWN: Final = "down"
_SESSID_MAX: Final = 64
"""The cmap's (shm/cmap.py SESSID_MAX): a longer token names no session anywhere."""
_ID: Final = r"[0-9a-f]{1,16}"
_TOKEN: Final = f"[A-Za-z0-9._~+=/-]{{1,{_SESSID_MAX}}}"  # RFC 4975 §9 session-id
_ASK: Final = re.compile(rf"({_ID}) ({_TOKEN})".encode())
# An address as a node writes use_path_addr: host:port, an IPv6 host in brackets, maybe a scheme.
_ADDR: Final = r"[A-Za-z0-9.:\[\]/-]{1,255}"
_ANSWER: Final = re.compile(rf"({_ID}) ({_TOKEN}) (?:({FOUND}) ({_ADDR})|({NONE}|{DOWN}))".encode())
_ADDR_RE: Final = re.compile(_ADDR)


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    token: str
    status: str
    addr: str = ""


def encode_ask(id_: str, token: str) -> bytes:
    return f"{id_} {token}".encode("ascii")


def decode_ask(data: bytes) -> tuple[str, str]:
    """(id, token) of a question; ValueError when it is not one."""
    match = _ASK.fullmatch(data)
    if match is None:
        raise ValueError(f"not a where-is question: {data[:80]!r}")
    return match[1].decode(), match[2].decode()


def encode_answer(answer: Answer) -> bytes:
    tail = f" {answer.addr}" if answer.status == FOUND else ""
    return f"{answer.id} {answer.token} {answer.status}{tail}".encode("ascii")


def decode_answer(data: bytes) -> Answer:
    """The answer a datagram carries; ValueError when it is not one."""
    match = _ANSWER.fullmatch(data)
    if match is None:
        raise ValueError(f"not a where-is answer: {data[:80]!r}")
    if match[3] is not None:
        return Answer(match[1].decode(), match[2].decode(), FOUND, match[4].decode())
    return Answer(match[1].decode(), match[2].decode(), match[5].decode())


def valid_addr(addr: str) -> bool:
    """Whether `addr` (a node's registry entry) can be given in an answer."""
    return _ADDR_RE.fullmatch(addr) is not None


def valid_token(token: str) -> bool:
    """Whether `token` may be asked about (a question would carry it whole)."""
    return _ASK.fullmatch(b"0 " + token.encode("ascii", "replace")) is not None
