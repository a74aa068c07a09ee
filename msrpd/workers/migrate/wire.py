"""What a worker's accept socket carries, and a moved connection's state: sans-IO.

A datagram carries one or more descriptors (fdpass.py) and a message saying what they are,
by its first byte:
- PASSED (b"A") + the listening address: one connection accepted by another worker before it
  read a byte (balance.py).
- MOVED (b"M") + a move message: one connection moved with its state (colocate.py).
- BATCH (b"B") + length-prefixed move messages, one per descriptor, in order: a retiring
  worker's connections (retire.py).
A move message is the connection's state as one line of JSON, then the bytes its reader held
(MoveState).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from enum import Enum

from .ports import Conn
from .state import Worker

__all__ = [
    "MAX_STATE",
    "Kind",
    "MoveState",
    "Moved",
    "Passed",
    "WireError",
    "decode",
    "encode_batch",
    "encode_moved",
    "encode_passed",
]

MAX_STATE = 1 << 15
"""Bytes of JSON state (session ids, mostly) a moving connection may carry."""
_LENGTH = struct.Struct("!I")


class WireError(ValueError):
    """A datagram or a move message that does not parse: its descriptors are closed."""


class Kind(Enum):
    PASSED = b"A"
    MOVED = b"M"
    BATCH = b"B"


@dataclass(frozen=True, slots=True)
class Passed:
    """A connection another worker accepted: serve it as if accepted here."""

    listen: str


@dataclass(frozen=True, slots=True)
class Moved:
    """A connection another worker moved here, with its move message (MoveState)."""

    message: bytes


def encode_passed(listen: str) -> bytes:
    return Kind.PASSED.value + listen.encode()


def encode_moved(message: bytes) -> bytes:
    return Kind.MOVED.value + message


def encode_batch(messages: list[bytes]) -> bytes:
    """One datagram for several moved connections, their descriptors in the same order."""
    return Kind.BATCH.value + b"".join(_LENGTH.pack(len(m)) + m for m in messages)


def decode(data: bytes, fds: int) -> list[Passed | Moved]:
    """What each of the `fds` descriptors of datagram `data` is, in order.

    Raises:
        WireError: an unknown kind, a truncated batch, or not one message per descriptor.
    """
    tag, body = data[:1], data[1:]
    if tag == Kind.BATCH.value:
        messages = _split_batch(body)
        if len(messages) != fds:
            raise WireError(f"a bad batch: {len(messages)} states for {fds} connections")
        return [Moved(m) for m in messages]
    if fds != 1:
        raise WireError(f"{fds} connections in one message")
    if tag == Kind.PASSED.value:
        return [Passed(body.decode(errors="replace"))]
    if tag == Kind.MOVED.value:
        return [Moved(body)]
    raise WireError(f"unknown message {data[:16]!r}")


def _split_batch(body: bytes) -> list[bytes]:
    messages, pos = [], 0
    while pos < len(body):
        if pos + _LENGTH.size > len(body):
            raise WireError("a bad batch: truncated")
        (size,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if pos + size > len(body):
            raise WireError("a bad batch: truncated")
        messages.append(body[pos : pos + size])
        pos += size
    return messages


@dataclass(frozen=True, slots=True)
class MoveState:
    """What the new owner needs to serve a moved connection (handoverio.Handover.adopt)."""

    old: int
    """Its id at the old owner."""
    came_from: Worker
    listen: str
    sessions: list[str]
    meta: dict[str, tuple[str, float]]
    counts: tuple[int, int, int, int]
    """frames in, frames out, bytes in, bytes out."""
    opened: float
    active: float
    """When it last sent a byte (monotonic: one clock for every process on Linux)."""
    moves: int
    handovers: int
    held: bytes
    """What the old owner's reader held: read before anything else."""
    former: tuple[int, ...] = ()
    """Its ids before `old` (transactions.py matches responses on any of them)."""
    proven: bool = False
    counted: bool = False
    """[limits] (workers/limits.py): off probation; counted against its source address."""
    rates: tuple[float | None, ...] = ()
    """Its [limits] rate buckets' tokens as it left (ratelimit.ReadRate.levels)."""

    @classmethod
    def of(cls, conn: Conn, held: bytes, me: Worker, *, handover: bool = False) -> MoveState:
        """What travels with `conn` from worker `me`, its reader's bytes `held` after it;
        `handover`: a reload moves it (not counted against colocation's MAX_MOVES)."""
        migration, stats = conn.migration, conn.stats
        return cls(
            old=conn.conid,
            came_from=me,
            listen=conn.wire.local_sock,
            sessions=stats.sessions,
            meta=stats.session_meta,
            counts=(stats.frames_in, stats.frames_out, stats.bytes_in, stats.bytes_out),
            opened=stats.opened,
            active=stats.last_active,
            moves=migration.moves + 1,
            handovers=migration.handovers + handover,
            held=held,
            former=migration.former,
            proven=stats.proven,
            counted=stats.counted,
            rates=conn.rate_levels(),
        )

    def restore(self, conn: Conn) -> None:
        """Give the connection object made for the moved socket what travelled with it
        (idle_timeout goes on from its last byte)."""
        stats = conn.stats
        stats.sessions = list(self.sessions)
        stats.session_meta = dict(self.meta)
        stats.frames_in, stats.frames_out, stats.bytes_in, stats.bytes_out = self.counts
        stats.opened, stats.last_active = self.opened, self.active
        stats.proven, stats.counted = self.proven, self.counted
        stats.rate_levels = self.rates
        conn.migration.moves, conn.migration.handovers = self.moves, self.handovers
        conn.migration.former = (*self.former, self.old)

    def encode(self) -> bytes | None:
        """The move message; None when the state is over MAX_STATE (not worth a move)."""
        state = {
            "old": self.old,
            "from": list(self.came_from),
            "listen": self.listen,
            "sessions": self.sessions,
            "meta": self.meta,
            "counts": list(self.counts),
            "opened": self.opened,
            "active": self.active,
            "moves": self.moves,
            "handovers": self.handovers,
            "former": list(self.former),
            "limits": [self.proven, self.counted],
            "rates": list(self.rates),
        }
        head = json.dumps(state).encode()
        return None if len(head) > MAX_STATE else head + b"\n" + self.held

    @classmethod
    def decode(cls, message: bytes) -> MoveState:
        """Raises WireError when `message` is no move message."""
        head, _, held = message.partition(b"\n")
        try:
            state = json.loads(head)
            slot, generation = state["from"]
            frames_in, frames_out, bytes_in, bytes_out = state["counts"]
            proven, counted = state["limits"]
            return cls(
                old=int(state["old"]),
                came_from=(int(slot), int(generation)),
                listen=str(state["listen"]),
                sessions=[str(s) for s in state["sessions"]],
                meta={str(k): (str(v[0]), float(v[1])) for k, v in state["meta"].items()},
                counts=(int(frames_in), int(frames_out), int(bytes_in), int(bytes_out)),
                opened=float(state["opened"]),
                active=float(state["active"]),
                moves=int(state["moves"]),
                handovers=int(state["handovers"]),
                held=held,
                former=tuple(int(c) for c in state["former"]),
                proven=bool(proven),
                counted=bool(counted),
                rates=_levels(state.get("rates", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WireError(f"a bad move message: {exc!r}") from None


def _levels(rates: list[object]) -> tuple[float | None, ...]:
    """MoveState.rates from JSON: 4 finite numbers or nulls (an infinite debt would stop the
    connection for good). Raises ValueError or TypeError."""
    if not isinstance(rates, list) or len(rates) not in (0, 4):
        raise ValueError(f"rates {rates!r}")
    levels = tuple(None if r is None else float(r) for r in rates)  # type: ignore[arg-type]
    if not all(r is None or math.isfinite(r) for r in levels):
        raise ValueError(f"rates {rates!r}")
    return levels
