"""The settings tree: frozen dataclasses, one per TOML section (etc/msrpd.toml documents every key).

Rules: Kamailio's modparam names and defaults in [msrp] (kamailio-msrp.md §9) unless a field
says otherwise. Each field carries its own check in its metadata (checks.py), so the schema
cannot drift from the tree. A section may group some of its keys in a nested dataclass (field
metadata group(cls)): the TOML section stays flat, and the loader fills the group from them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

from .address import ListenAddress
from .checks import (
    ALIASES,
    BOOLEAN,
    CACHE_TTL,
    FILE,
    IDENTIFIER,
    LISTEN,
    ORIGINS,
    PATH,
    RATE,
    RATE_OR_OFF,
    REALM,
    SCHEMES,
    SECONDS,
    SECONDS_OR_OFF,
    SQL_NAME,
    address,
    check,
    integer,
    one_of,
)
from .cluster import ClusterSettings
from .userdb import UsersSource, parse_users

__all__ = [
    "DEFAULT_PORT",
    "MAX_USER_SESSIONS",
    "AuthSettings",
    "ControlSettings",
    "CoreSettings",
    "DialSettings",
    "LimitsSettings",
    "LogLevel",
    "LogSettings",
    "MetricsSettings",
    "MsrpSettings",
    "Settings",
    "TlsSettings",
    "WebSocketSettings",
    "default_run_dir",
    "group",
]

DEFAULT_PORT: Final = 2855  # RFC 4975 §6: the MSRP port when a URI names none.
_MAX_CHILDREN: Final = 256
MAX_USER_SESSIONS: Final = 32  # the slots of a user's record in shared memory (shm/usersess.py)

LogLevel = Literal["debug", "info", "warning", "error"]
LogTarget = Literal["stderr", "file", "syslog"]

_LOG_LEVEL: Final = one_of(get_args(LogLevel))
_LOG_TARGET: Final = one_of(get_args(LogTarget))
_DEFAULT_LISTEN: Final = (ListenAddress("tcp", "127.0.0.1", DEFAULT_PORT),)


def group(cls: type[Any]) -> Mapping[str, Any]:
    """Field metadata of a nested group of keys, dataclass `cls` (the loader flattens it)."""
    return {"group": cls}


def default_run_dir() -> Path:
    """$XDG_RUNTIME_DIR/msrpd when that is set to an absolute path, else /tmp/msrpd-<uid>."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    # The XDG base directory spec says a relative value is to be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "msrpd"
    return Path(f"/tmp/msrpd-{os.getuid()}")


def _default_children() -> int:
    return min(os.cpu_count() or 2, _MAX_CHILDREN)


@dataclass(frozen=True, slots=True)
class CoreSettings:
    children: int = field(default_factory=_default_children, metadata=integer(1, _MAX_CHILDREN))
    """Worker processes, 1 to 256. Default: the CPU count (2 if unknown, at most 256)."""

    listen: tuple[ListenAddress, ...] = field(default=_DEFAULT_LISTEN, metadata=LISTEN)
    """Sockets every worker accepts on (SO_REUSEPORT). No two share a host and port."""

    run_dir: Path = field(default_factory=default_run_dir, metadata=PATH)
    """Directory for the pidfile, lock file, control FIFO and shared-memory name prefix."""

    log_level: LogLevel = field(default="info", metadata=_LOG_LEVEL)
    """Lowest level logged."""

    drain_timeout: float = field(default=30.0, metadata=SECONDS)
    """Seconds a stopping worker may keep serving its connections."""

    retire_timeout: float = field(default=0.0, metadata=SECONDS_OR_OFF)
    """Seconds a worker retired by a reload keeps serving the connections it cannot hand to
    the new generation (TLS, links to next hops) before it is stopped (as by `msrpd stop`);
    0: until they close."""

    heartbeat_timeout: float = field(default=10.0, metadata=SECONDS)
    """Seconds without a worker heartbeat before the supervisor kills the worker."""

    idle_timeout: float = field(default=3600.0, metadata=SECONDS)
    """Seconds an MSRP connection may stay silent before it is closed."""

    backlog: int = field(default=4096, metadata=integer(1, 1 << 20))
    """Listen backlog of each accepting socket (completed connections not yet accepted); the
    kernel caps it at net.core.somaxconn."""

    head_timeout: float = field(default=10.0, metadata=SECONDS)
    """Seconds a frame head (first line and headers) may take to arrive, from its first byte:
    a slower one is closed (slowloris). Silence between frames is idle_timeout's."""

    handoff_memory: int = field(default=64 << 20, metadata=integer(1 << 16))
    """Bytes a worker may spend remembering the frames it handed to other workers, so that
    one they could not deliver is reported to its sender (RFC 4975 §7.1.2; workers/gone.py).
    Default 64 MiB (about 350 bytes a frame)."""

    balance: bool = field(default=True, metadata=BOOLEAN)
    """Pass new TCP connections to the least loaded worker, and move a connection to the
    worker of the peer it relays to (fd passing), so pairs stay in one process. A reload's
    handover to the new generation does not depend on it."""


@dataclass(frozen=True, slots=True)
class DialSettings:
    """[msrp] keys on outbound connects to next hops, grouped: the TOML stays flat."""

    connect_timeout: float = field(default=10.0, metadata=SECONDS)
    """Seconds an outbound connection to a next hop may take to connect (TLS included)."""

    connect_fail_ttl: float = field(default=5.0, metadata=SECONDS)
    """Seconds a next hop whose connect failed is remembered: frames for it fail at once."""

    max_connects: int = field(default=256, metadata=integer(1))
    """Outbound connects in flight per worker; a frame needing one more fails."""

    max_connects_per_conn: int = field(default=8, metadata=integer(1))
    """Outbound connects in flight that frames from one connection may have started."""

    connect_rate: float = field(default=20.0, metadata=RATE)
    """Outbound connects per second that frames from one connection may start (a burst of
    that many, at least 1, refilled at that rate): naming a new next hop in every frame
    stays cheap."""

    max_connecting_bytes: int = field(default=16 * 1024 * 1024, metadata=integer(1024))
    """Bytes per worker that may wait in outbound connections still connecting."""


@dataclass(frozen=True, slots=True)
class MsrpSettings:
    sipmsg: bool = field(default=True, metadata=BOOLEAN)
    """Offer each frame to the route as a fake SIP message too (Kamailio's sipmsg=1)."""

    cmap_size: int = field(default=8, metadata=integer(0, 16))
    """log2 of the number of cmap lock stripes (Kamailio's default is 0 = no cmap)."""

    cmap_max_entries: int = field(default=32768, metadata=integer(1, 1 << 24))
    """Capacity of the shared-memory connection map, in records."""

    timer_interval: int = field(default=60, metadata=integer(1))
    """Seconds between sweeps of expired cmap entries."""

    auth_min_expires: int = field(default=60, metadata=integer(1))
    """Lower bound, in seconds, for the expiry granted to an AUTH (RFC 4976 §5)."""

    auth_max_expires: int = field(default=3600, metadata=integer(1))
    """Upper bound, and the default grant, in seconds; at least auth_min_expires."""

    use_path_addr: str | None = field(default=None, metadata=address(SCHEMES, port_required=False))
    """host[:port] put after msrp[s]:// in Use-Path, stored as given (a scheme is allowed and
    stripped when used). None: the address the AUTH arrived on."""

    aliases: tuple[str, ...] = field(default=(), metadata=ALIASES)
    """Other names of this relay, "[msrp[s]://]host[:port]": with the listen addresses and
    use_path_addr they make the URIs that name us (config/selfuri.py). A next hop that is ours
    is routed again inside the relay, never over a connection to itself (issue 12, item 9).
    No scheme: every scheme we serve; no port: every listen port."""

    event_callback: str = field(default="ksr_msrp_event", metadata=IDENTIFIER)
    """Name of the route function called for each frame."""

    route: Path | None = field(default=None, metadata=FILE)
    """Routing script. None: the bundled relay route (RFC 4976: tokens and direction,
    routing/routes/relay.py); the Kamailio examples are routes/cmap.py and htable.py."""

    block_unknown_methods: bool = field(default=False, metadata=BOOLEAN)
    """The relay route answers a request with a method other than SEND, REPORT and AUTH
    with 501 instead of forwarding it like a REPORT (RFC 4976 §6.4.2 MAY)."""

    max_body: int = field(default=1024 * 1024, metadata=integer(1024))
    """Largest body, in bytes, handed over as one frame; larger bodies are streamed."""

    max_head: int = field(default=16 * 1024, metadata=integer(1024, 1024 * 1024))
    """Largest first line plus header block, in bytes."""

    transaction_timeout: float = field(default=30.0, metadata=SECONDS)
    """Seconds a forwarded request waits for its next hop's response, from the last byte
    written (RFC 4976 §6.4.1): then a SEND with Failure-Report yes gets its sender a REPORT
    000 408, a forwarded AUTH a 408, and a later response is dropped."""

    dialing: DialSettings = field(default_factory=DialSettings, metadata=group(DialSettings))
    """Outbound connects to next hops: the [msrp] keys of DialSettings."""


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Abuse limits (issue 14, rfc-checklist §3.7, §4.4, §5.5). A count or rate of 0 turns its
    limit off. They apply whatever route runs, to connections clients open (never to those the
    relay opens to next hops); what a client over each gets is in the README's table."""

    probation: float = field(default=30.0, metadata=SECONDS)
    """Seconds an accepted connection may live (its TLS handshake included) without a session
    of its own (a successful AUTH) and without a frame of its relayed through a token: then it
    is closed (RFC 4976 §6.1). Silence on such a connection ends it after this, not after
    idle_timeout."""

    max_conns_per_addr: int = field(default=64, metadata=integer(0))
    """Open connections from one source address, counted over every worker; a connection over
    it is closed at accept, before anything is read."""

    max_unauth_conns: int = field(default=4096, metadata=integer(0))
    """Open connections still on probation (no session, nothing relayed through a token), in
    the whole relay: each worker takes an equal share (at least 1); a connection over its
    worker's share is closed at accept."""

    auth_failures_close: int = field(default=3, metadata=integer(0))
    """Failed AUTHs (a 401 to an AUTH with credentials, not for a stale nonce, not one another
    relay forwarded) after which the connection is closed, once the 401 is written (RFC 4976
    §6.3)."""

    ban_after: int = field(default=10, metadata=integer(0))
    """Failed AUTHs from one source address within ban_window that ban it on every worker."""

    ban_window: float = field(default=60.0, metadata=SECONDS)
    """Seconds over which ban_after counts an address's failed AUTHs."""

    ban_time: float = field(default=300.0, metadata=SECONDS)
    """Seconds a banned address's new connections are closed at accept."""

    max_sessions_per_user: int = field(default=10, metadata=integer(0, MAX_USER_SESSIONS))
    """Live sessions (tokens) one user may hold, over every worker and, with a cluster, over
    every node (as of the last heartbeat), at most 32; an AUTH beyond it is answered 403."""

    max_outbound_per_second: float = field(default=200.0, metadata=RATE_OR_OFF)
    """Connects to next hops the whole relay may start per second (each worker takes an equal
    share, in bursts of as many, at least 1); a frame needing one more fails as an unreachable
    next hop does."""

    session_frame_rate: float = field(default=1000.0, metadata=RATE_OR_OFF)
    """Frames per second one client connection (its sessions' traffic) may send; a faster one
    is not read until its token bucket has refilled (back-pressure, nothing dropped)."""

    session_byte_rate: float = field(default=16.0 * 1024 * 1024, metadata=RATE_OR_OFF)
    """Bytes per second one client connection may send, with the same back-pressure."""

    rate_burst: float = field(default=2.0, metadata=SECONDS)
    """Seconds of every rate here a connection may send at once."""

    user_frame_rate: float = field(default=0.0, metadata=RATE_OR_OFF)
    """Frames per second one user may send over all its sessions, on every node of a cluster
    (workers/userrate.py): each session gets an equal share, refreshed every second; a faster
    sender gets the same back-pressure as session_frame_rate. Off by default: the sessions
    quota and the session rates bound a user already."""

    user_byte_rate: float = field(default=0.0, metadata=RATE_OR_OFF)
    """Bytes per second one user may send over all its sessions, shared the same way."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    realm: str = field(default="myrealm", metadata=REALM)
    """Digest realm in 401 challenges (RFC 4976 §5.1); the module documentation's examples
    use "myrealm"."""

    users: UsersSource | None = field(default=None, metadata=check(parse_users))
    """The user store: an SQLite file (`msrpd user add` creates it) or a PostgreSQL URL
    (userdb.py). None: AUTH is answered by the route."""

    users_table: str = field(default="subscriber", metadata=SQL_NAME)
    """PostgreSQL: the table with Kamailio's/OpenSIPS's subscriber columns (username, domain,
    ha1), "table" or "schema.table"."""

    users_cache_ttl: float = field(default=30.0, metadata=CACHE_TTL)
    """PostgreSQL: seconds a worker keeps an answer (a user's HA1, or "no such user")."""

    users_timeout: float = field(default=2.0, metadata=SECONDS)
    """PostgreSQL: seconds a lookup (connecting included) may take before its AUTH gets 500."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    certificate: Path | None = field(default=None, metadata=FILE)
    """PEM certificate chain; required when core.listen has a tls: address."""

    private_key: Path | None = field(default=None, metadata=FILE)
    """PEM private key; required when core.listen has a tls: address."""

    ca: Path | None = field(default=None, metadata=FILE)
    """PEM CA bundle for client certificates; required by verify_client."""

    verify_client: bool = field(default=False, metadata=BOOLEAN)
    """Ask for and verify a client certificate."""


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """ws: and wss: listeners (RFC 7977); wss uses the [tls] certificate."""

    origins: tuple[str, ...] = field(default=(), metadata=ORIGINS)
    """Origins allowed to open a connection ("https://chat.example.com"), compared
    case-insensitively; a handshake with another Origin gets 403. Empty: any (and none)."""

    max_upgrade_bytes: int = field(default=8192, metadata=integer(1024, 1024 * 1024))
    """The HTTP upgrade request's size cap: a bigger one gets 431 and a close."""

    upgrade_timeout: float = field(default=10.0, metadata=SECONDS)
    """Seconds from the connection to a complete upgrade request; later: closed."""

    max_message: int = field(default=16 * 1024 * 1024, metadata=integer(1024))
    """The largest WebSocket message taken (one MSRP chunk each, RFC 7977 §5.1); a bigger
    one closes the connection with 1009. Larger frames toward a WebSocket client go as one
    fragmented message."""

    ping_interval: float = field(default=30.0, metadata=SECONDS_OR_OFF)
    """Seconds between the relay's Pings on an idle WebSocket connection, which keep it
    (and the client's tokens) alive through NATs (RFC 7977 §6). 0: off."""


@dataclass(frozen=True, slots=True)
class ControlSettings:
    fifo: Path | None = field(default=None, metadata=PATH)
    """Control FIFO. None: run_dir/msrpd.fifo."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: str | None = field(default=None, metadata=address((), port_required=True))
    """"host:port" of the metrics endpoint, IPv6 in brackets. None: no endpoint."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    target: LogTarget = field(default="stderr", metadata=_LOG_TARGET)
    """Where log lines go: stderr (with `start` as a daemon: run_dir/msrpd.log), a file, or
    syslog (/dev/log, facility daemon)."""

    file: Path | None = field(default=None, metadata=PATH)
    """Log file when target is "file". None: run_dir/msrpd.log."""

    json: bool = field(default=False, metadata=BOOLEAN)
    """One JSON object per line (time, level, pid, logger, message, and the fields of an
    accounting record) instead of text."""

    accounting: bool = field(default=True, metadata=BOOLEAN)
    """Log one `msrpd.acct` line per session when it ends (its connection closes)."""


@dataclass(frozen=True, slots=True)
class Settings:
    core: CoreSettings = field(default_factory=CoreSettings)
    msrp: MsrpSettings = field(default_factory=MsrpSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    websocket: WebSocketSettings = field(default_factory=WebSocketSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    source: Path | None = None
    """The file these settings came from (absolute), or None for the embedded defaults."""
