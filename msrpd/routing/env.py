"""What a routing script's `msrp` object needs from the worker that runs it.

Rules: routing code never touches sockets, the event loop or shared memory directly; it calls
these methods, which the worker implements (and tests implement in memory). That keeps the
script API testable without processes and keeps I/O in msrpd/workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from ..config.selfuri import SelfUris
from ..protocol import Frame, MsrpUri
from ..protocol.splice import Spliced
from ..shm import Cmap
from .sht import ScriptHTable

__all__ = ["Destination", "HotEnv", "RouteEnv", "RoutePolicy", "SendFlags"]


class SendFlags:
    """Kamailio's send flags, as msrp_relay_flags / msrp_reply_flags take them."""

    REUSE_ONLY: Final = 1
    """Only use an existing connection; never open one (SND_F_FORCE_CON_REUSE)."""
    CLOSE_AFTER: Final = 2
    """Close the connection after this write (SND_F_CON_CLOSE)."""


class Destination:
    """Where relay() sends: a known connection (cmap) or an address (set_dst, To-Path).

    A client's own (inbound) connection is reached only through its session (`conid`) or an
    address the script chose (`chosen`, set_dst); a To-Path URI reaches only connections the
    relay opened, so knowing a client's address is not enough to write to it (issue 12).

    A plain class, not a frozen dataclass: one is made per relayed frame, and mypyc compiles
    a plain class's __init__ (a dataclass's is generated Python, about 10 times slower).
    """

    __slots__ = ("chosen", "conid", "node", "sock", "uri")

    def __init__(
        self,
        uri: MsrpUri | None,
        conid: int | None = None,
        sock: str = "",
        chosen: bool = False,
        node: bool = False,
    ) -> None:
        self.uri: Final = uri
        self.conid: Final = conid
        self.sock: Final = sock
        self.chosen: Final = chosen
        """The script named this address (set_dst): an inbound connection from it may be
        used."""
        self.node: Final = node
        """`uri` is the session's token at the other node of the cluster that holds it
        (hop.token): the frame goes there with only its leftmost To-Path URI replaced by
        `uri`."""

    def _fields(self) -> tuple[MsrpUri | None, int | None, str, bool, bool]:
        return self.uri, self.conid, self.sock, self.chosen, self.node

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Destination) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        uri, conid, sock, chosen, node = self._fields()
        return f"Destination({uri!r}, {conid!r}, {sock!r}, chosen={chosen}, node={node})"


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """The [msrp] and [auth] settings the script API applies."""

    auth_min_expires: int
    auth_max_expires: int
    use_path_addr: str | None
    realm: str
    sipmsg: bool
    nonce_ttl: float = 300.0
    block_unknown_methods: bool = False
    """[msrp] block_unknown_methods: the relay route answers 501 instead of forwarding."""


class HotEnv:
    """The part of RouteEnv every relayed frame uses, as a base class: the worker's env
    (workers/connenv.ConnEnv) is one, so compiled code that finds it one (isinstance) calls
    these natively; through the Protocol each call is generic, ~350 instructions (issue 16).
    Tests' in-memory envs need not be one."""

    __slots__ = ("now",)

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        """RouteEnv.now."""

    @property
    def cmap(self) -> Cmap | None:
        raise NotImplementedError

    def write_origin(self, data: bytes, flags: int, status: int = 0) -> None:
        raise NotImplementedError

    def relay(self, frame: Frame, data: bytes | Spliced, dest: Destination, flags: int) -> int:
        raise NotImplementedError


class RouteEnv(Protocol):
    """The worker side of the script API."""

    @property
    def policy(self) -> RoutePolicy: ...

    @property
    def cmap(self) -> Cmap | None: ...

    @property
    def self_uris(self) -> SelfUris | None:
        """The URIs that name this relay (None: not known, nothing is ours)."""

    def to_us(self, uri: bytes) -> bool:
        """Whether path URI `uri`, as received, names this relay (SelfUris.names)."""

    @property
    def nonce_secret(self) -> bytes: ...

    @property
    def now(self) -> Callable[[], float]:
        """The wall clock (time.time, or a test's): an attribute, not a method, so that
        compiled routes call it without a method lookup (issue 16: a session's expiry is
        checked on every frame)."""

    def new_session_id(self) -> str: ...

    def nonce_salt(self) -> bytes:
        """4 random bytes for the next digest nonce."""

    def user_ha1(self, username: str, realm: str) -> str | None:
        """The user's HA1, None when unknown. A remote store may not have it yet: it raises
        NotYet (the frame is routed again once it has) or Unavailable (waits.py)."""

    @property
    def has_user_store(self) -> bool: ...

    def node_of(self, sessid: str) -> MsrpUri | None:
        """The URI of session `sessid` at the other node of the cluster that holds it; None
        when no other node does, or the cluster does not forward. The answer may not be here
        yet: it raises NotYet (the frame is routed again once it is, waits.py)."""

    @property
    def htable(self) -> ScriptHTable: ...

    def write_origin(self, data: bytes, flags: int, status: int = 0) -> None:
        """Write `data` (a response) to the connection the current frame came on; `status`
        is its code when the caller knows it (0: read from `data`)."""

    def close_origin(self, reason: str) -> None:
        """Close the connection the current frame came on, without answering it."""

    def relay(self, frame: Frame, data: bytes | Spliced, dest: Destination, flags: int) -> int:
        """Send `data` (made from `frame`, the frame being routed; a big one in two pieces)
        towards `dest`; 1 when it is on its way, negative when it cannot be."""

    def t_relay(self, frame: Frame, dest: Destination, flags: int) -> int:
        """Forward `frame` statefully (a request: new transaction id, its answer mapped back;
        a response: matched to its transaction); 1 when on its way, negative otherwise."""

    def message_refused(self, frame: Frame) -> bool:
        """`frame` is a chunk of a message a next hop refused with 413 (t_relay)."""

    def auth_done(self, ok: bool, fault: bool = False) -> None:
        """Count a digest check (credentials were given): passed or failed; `fault`: a
        failure the AUTH-failure limits count (wrong credentials from a client connected to
        us, not a stale nonce, not an AUTH another relay forwarded)."""

    def claim_session(self, user: str, sessid: str) -> tuple[int, str] | None:
        """Before saving session `sessid` of `user`: None when the user may hold it, else the
        status and reason to answer ([limits] max_sessions_per_user: 403)."""

    def session_saved(self, sessid: str, user: str = "") -> None:
        """Note that the current connection owns `sessid` (dropped when it closes)."""
