"""What the route path needs of the objects it writes to and pauses, as Protocols.

Why (issue 13): the connection module sits above the route path (it runs the route), so the
route path names what it uses of a connection here instead of importing it; the connection,
the handoff link's source and the sinks satisfy these structurally.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final, Protocol, TypeAlias

from ..cluster.shares import Asker
from ..protocol import MsrpUri

__all__ = ["WRITE_HIGH", "Blockable", "Lost", "NodeCheck", "NodeLookup", "Sink", "Writable"]

WRITE_HIGH: Final = 1 << 20
"""Bytes a connection (or a handoff link) may have waiting to be written before the readers
relaying into it pause (1 MiB, flow.py)."""


Lost: TypeAlias = Callable[[int, str], None]
"""How the sender of a forwarded transaction's request hears that it is lost, with a status
and reason (txrelay.TxRelay.lost): called by whoever finds out (dialing.py, gone.py) instead
of the failure notice they would build themselves."""


class Blockable(Protocol):
    """A reader that can be paused: a connection, or a handoff link (flow.py)."""

    def block(self, dest: Hashable) -> None: ...

    def unblock(self, dest: Hashable) -> None: ...


class Writable(Protocol):
    """Where frames for one connection are written: its outbox (outbox.Outbox)."""

    def write_frame(
        self,
        data: bytes | memoryview,
        close_after: bool = False,
        *,
        source: Hashable = None,
        more: bool = False,
        reader: Blockable | None = None,
    ) -> bool: ...


class Sink(Protocol):
    """Where the bytes of one relayed frame go. Every sink (sinks.py, dialing.FailedSink,
    handover.MovedSink) subclasses this, so the type checker holds it to this signature."""

    __slots__ = ()

    def send(
        self,
        data: bytes | memoryview,
        *,
        source: Hashable = None,
        more: bool = False,
        close_after: bool = False,
    ) -> bool:
        """Queue `data`; False when the destination is known to be gone. `source` names the
        connection a streamed frame comes from; `more` says pieces of it follow."""


class NodeLookup(Protocol):
    """Which other node of the cluster holds a token (cluster/finder.NodeFinder)."""

    def where(self, token: str, asker: Asker) -> MsrpUri | None:
        """Its URI there, None when none does; raises NotYet while the answer is out.
        `asker`: the connection's share of the questions."""

    def cannot_wait(self, token: str) -> None:
        """A frame for `token` that may not wait for where() is answered: none holds it."""

    def close(self) -> None:
        """The worker is exiting."""


class NodeCheck(Protocol):
    """Which TLS peers are nodes of the cluster (cluster/nodecerts.NodeCerts)."""

    def is_node(self, transport: object) -> bool: ...
