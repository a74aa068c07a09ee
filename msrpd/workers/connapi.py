"""Connection: what the rest of the worker may use of a connection (conn.py implements it).

Modules that hold connections (the context, delivery, stopping, migration...) depend on this
Protocol, not on conn.py, so the connection can reach them without an import circle. The
counters are ConnStats (connstats.py), the writing side is the Outbox (outbox.py), the
socket is the Wire (transports/).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from ..protocol import ConnInfo, FrameReader
    from .connenv import ConnEnv
    from .connstats import ConnStats
    from .intake import Intake
    from .migrate.state import Arrival, MigrationState
    from .outbox import Outbox
    from .ports import Sink
    from .sentlog import Unsent
    from .transports.base import Wire

__all__ = ["Connection", "as_protocol"]


class Connection(Protocol):
    conid: int
    peer_key: str
    """`tcp:host:port` or `tls:host:port` of the peer, once connected."""
    info: ConnInfo
    outbound: bool
    listed: bool
    closed: bool
    stats: ConnStats
    out: Outbox
    wire: Wire
    reader: FrameReader
    env: ConnEnv
    migration: MigrationState
    """Balancing and colocation (migrate/)."""
    arrival: Arrival | None
    """Just moved here: what it holds back until its handover is done (migrate/)."""
    stream_sink: Sink | None
    """Where the pieces of the streamed frame being read go."""
    intake: Intake

    @property
    def registry_key(self) -> str: ...

    @property
    def may_read(self) -> bool: ...

    @property
    def unsent(self) -> bool: ...

    @property
    def unsent_relayed(self) -> bool: ...

    @property
    def holding(self) -> bool: ...

    @property
    def reading_held(self) -> bool: ...

    def bytes_to_carry(self) -> bytes | None: ...

    def carry_size(self) -> int: ...

    def rate_levels(self) -> tuple[float | None, ...]: ...

    def arrive(self, carried: bytes, on_taken_over: Callable[[Any], None]) -> None: ...

    def release_on(self, link: object) -> None: ...

    def hold_reading(self) -> None: ...

    def start_reading(self) -> None: ...

    def release(self) -> None: ...

    def write_reply(self, data: bytes, close_after: bool = False) -> None: ...

    def close(self, reason: str = "closed by relay", going_away: bool = False) -> None: ...

    def abort(self, reason: str = "worker exit") -> None: ...

    def stop_reading(self) -> None: ...

    def give_up(self) -> list[Unsent]: ...

    def connect_failed(self, reason: str) -> None: ...

    def head_overdue(self, began_before: float) -> bool: ...

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...


def as_protocol(conn: Connection) -> asyncio.BaseProtocol:
    """`conn` as the loop sees it: every Connection is an asyncio.Protocol (conn.py), which
    a typing.Protocol cannot say."""
    return cast(asyncio.BaseProtocol, conn)
