"""The settings tree and its TOML loader (etc/msrpd.toml documents every key).

Rules: settings are frozen dataclasses, one per TOML section, with Kamailio's modparam names and
defaults in [msrp] (kamailio-msrp.md §9) unless a field says otherwise. Each field carries its
own check in its metadata, so the schema cannot drift from the tree. The loader runs every check
and raises one ConfigError listing every problem. Where Kamailio clamps or rewrites a value
(cmap_size > 16, timer_interval <= 0), we refuse it. A relative path in the file is relative to
the file's directory. No I/O but reading the file and checking that the files it names exist.
"""

from __future__ import annotations

import difflib
import keyword
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal, get_args

from .address import ListenAddress, Proto, check_address, parse_listen
from .errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "AuthSettings",
    "ControlSettings",
    "CoreSettings",
    "ListenAddress",
    "LogLevel",
    "LogSettings",
    "MetricsSettings",
    "MsrpSettings",
    "Proto",
    "Settings",
    "TlsSettings",
    "default_run_dir",
    "load_config",
    "parse_listen",
]

DEFAULT_PORT: Final = 2855  # RFC 4975 §6: the MSRP port when a URI names none.
_MAX_CHILDREN: Final = 256

LogLevel = Literal["debug", "info", "warning", "error"]
LogTarget = Literal["stderr", "file", "syslog"]

_SCHEMES: Final = ("msrp://", "msrps://")


def default_run_dir() -> Path:
    """$XDG_RUNTIME_DIR/msrpd when that is set to an absolute path, else /tmp/msrpd-<uid>."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    # The XDG base directory spec says a relative value is to be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "msrpd"
    return Path(f"/tmp/msrpd-{os.getuid()}")


def _default_children() -> int:
    return min(os.cpu_count() or 2, _MAX_CHILDREN)


# Checks: each takes the TOML value and the config file's directory, and returns the field value
# or raises _Invalid with one message per problem (the loader prefixes the key). A field holds its
# check in metadata["check"], so `_check(fn)` and the _CAPS constants below are field metadata.


class _Invalid(Exception):
    pass


_Check = Callable[[Any, Path], Any]


def _check(check: _Check) -> Mapping[str, _Check]:
    return {"check": check}


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _rule(wanted: str, ok: Callable[[Any], bool]) -> Mapping[str, _Check]:
    def check(raw: Any, base: Path) -> Any:
        if not ok(raw):
            raise _Invalid(f"must be {wanted}, got {_shown(raw)}")
        return raw

    return _check(check)


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)  # a TOML bool is a Python int


def _integer(lo: int, hi: int | None = None) -> Mapping[str, _Check]:
    if hi is None:
        return _rule(f"an integer >= {lo}", lambda v: _is_int(v) and v >= lo)
    return _rule(f"an integer from {lo} to {hi}", lambda v: _is_int(v) and lo <= v <= hi)


def _seconds(raw: Any, base: Path) -> float:
    # 0 < raw < inf also refuses nan.
    if not (_is_int(raw) or isinstance(raw, float)) or not 0 < raw < math.inf:
        raise _Invalid(f"must be a number of seconds > 0, got {_shown(raw)}")
    return float(raw)


def _rate(raw: Any, base: Path) -> float:
    if not (_is_int(raw) or isinstance(raw, float)) or not 0 < raw < math.inf:
        raise _Invalid(f"must be a number per second > 0, got {_shown(raw)}")
    return float(raw)


def _seconds_or_off(raw: Any, base: Path) -> float:
    if (_is_int(raw) or isinstance(raw, float)) and raw == 0:
        return 0.0
    try:
        return _seconds(raw, base)
    except _Invalid:
        raise _Invalid(f"must be a number of seconds >= 0 (0: off), got {_shown(raw)}") from None


def _string(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise _Invalid(f"must be a non-empty string, got {_shown(raw)}")
    return raw


_BOOLEAN: Final = _rule("true or false", lambda v: isinstance(v, bool))
_LOG_LEVEL: Final = _rule(
    f"one of {', '.join(get_args(LogLevel))}", get_args(LogLevel).__contains__
)
_LOG_TARGET: Final = _rule(
    f"one of {', '.join(get_args(LogTarget))}", get_args(LogTarget).__contains__
)
_IDENTIFIER: Final = _rule(
    "a Python identifier",
    lambda v: isinstance(v, str) and v.isidentifier() and not keyword.iskeyword(v),
)
# The realm goes inside a quoted-string in WWW-Authenticate (RFC 2617 §1.2).
_REALM: Final = _rule(
    "a non-empty string without quotes, backslashes or control characters",
    lambda v: isinstance(v, str) and v != "" and all(c not in '"\\' and c.isprintable() for c in v),
)


def _path(raw: Any, base: Path) -> Path:
    text = _string(raw)
    if "\0" in text:
        raise _Invalid("must not contain a NUL character")
    return base / text  # an absolute text replaces base


def _existing_file(raw: Any, base: Path) -> Path:
    path = _path(raw, base)
    if not path.is_file():
        raise _Invalid(f"no such file: {path}")
    return path


def _address(schemes: tuple[str, ...], *, port_required: bool) -> Mapping[str, _Check]:
    def check(raw: Any, base: Path) -> str:
        text = _string(raw)
        try:
            check_address(text, schemes, port_required=port_required)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        return text

    return _check(check)


def _aliases(raw: Any, base: Path) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise _Invalid(f"must be a list of [msrp[s]://]host[:port] strings, got {_shown(raw)}")
    errors: list[str] = []
    for item in raw:
        try:
            check_address(_string(item), _SCHEMES, port_required=False)
        except (ValueError, _Invalid) as exc:
            errors.append(str(exc))
    if errors:
        raise _Invalid(*errors)
    return tuple(raw)


def _listen(raw: Any, base: Path) -> tuple[ListenAddress, ...]:
    if not isinstance(raw, list) or not raw:
        raise _Invalid(f"must be a non-empty list of proto:host:port strings, got {_shown(raw)}")
    found: dict[tuple[str, int], ListenAddress] = {}
    errors: list[str] = []
    for item in raw:
        try:
            address = parse_listen(_string(item))
        except (ValueError, _Invalid) as exc:
            errors.append(str(exc))
            continue
        key = (address.host, address.port)
        if key in found:
            errors.append(f"{str(address)!r} uses the same host and port as {str(found[key])!r}")
        found.setdefault(key, address)
    if errors:
        raise _Invalid(*errors)
    return tuple(found.values())


# The settings tree ----------------------------------------------------------------------------

_DEFAULT_LISTEN: Final = (ListenAddress("tcp", "127.0.0.1", DEFAULT_PORT),)
_SECONDS: Final = _check(_seconds)
_RATE: Final = _check(_rate)
_PATH: Final = _check(_path)
_FILE: Final = _check(_existing_file)


@dataclass(frozen=True, slots=True)
class CoreSettings:
    children: int = field(default_factory=_default_children, metadata=_integer(1, _MAX_CHILDREN))
    """Worker processes, 1 to 256. Default: the CPU count (2 if unknown, at most 256)."""

    listen: tuple[ListenAddress, ...] = field(default=_DEFAULT_LISTEN, metadata=_check(_listen))
    """Sockets every worker accepts on (SO_REUSEPORT). No two share a host and port."""

    run_dir: Path = field(default_factory=default_run_dir, metadata=_PATH)
    """Directory for the pidfile, lock file, control FIFO and shared-memory name prefix."""

    log_level: LogLevel = field(default="info", metadata=_LOG_LEVEL)
    """Lowest level logged."""

    drain_timeout: float = field(default=30.0, metadata=_SECONDS)
    """Seconds a stopping worker may keep serving its connections."""

    retire_timeout: float = field(default=0.0, metadata=_check(_seconds_or_off))
    """Seconds a worker retired by a reload keeps serving the connections it cannot hand to
    the new generation (TLS, links to next hops) before it is stopped (as by `msrpd stop`);
    0: until they close."""

    heartbeat_timeout: float = field(default=10.0, metadata=_SECONDS)
    """Seconds without a worker heartbeat before the supervisor kills the worker."""

    idle_timeout: float = field(default=3600.0, metadata=_SECONDS)
    """Seconds an MSRP connection may stay silent before it is closed."""

    backlog: int = field(default=4096, metadata=_integer(1, 1 << 20))
    """Listen backlog of each accepting socket (completed connections not yet accepted); the
    kernel caps it at net.core.somaxconn."""

    head_timeout: float = field(default=10.0, metadata=_SECONDS)
    """Seconds a frame head (first line and headers) may take to arrive, from its first byte:
    a slower one is closed (slowloris). Silence between frames is idle_timeout's."""

    balance: bool = field(default=True, metadata=_BOOLEAN)
    """Pass new TCP connections to the least loaded worker, and move a connection to the
    worker of the peer it relays to (fd passing), so pairs stay in one process. A reload's
    handover to the new generation does not depend on it."""


@dataclass(frozen=True, slots=True)
class MsrpSettings:
    sipmsg: bool = field(default=True, metadata=_BOOLEAN)
    """Offer each frame to the route as a fake SIP message too (Kamailio's sipmsg=1)."""

    cmap_size: int = field(default=8, metadata=_integer(0, 16))
    """log2 of the number of cmap lock stripes (Kamailio's default is 0 = no cmap)."""

    cmap_max_entries: int = field(default=32768, metadata=_integer(1, 1 << 24))
    """Capacity of the shared-memory connection map, in records."""

    timer_interval: int = field(default=60, metadata=_integer(1))
    """Seconds between sweeps of expired cmap entries."""

    auth_min_expires: int = field(default=60, metadata=_integer(1))
    """Lower bound, in seconds, for the expiry granted to an AUTH (RFC 4976 §5)."""

    auth_max_expires: int = field(default=3600, metadata=_integer(1))
    """Upper bound, and the default grant, in seconds; at least auth_min_expires."""

    use_path_addr: str | None = field(
        default=None, metadata=_address(_SCHEMES, port_required=False)
    )
    """host[:port] put after msrp[s]:// in Use-Path, stored as given (a scheme is allowed and
    stripped when used). None: the address the AUTH arrived on."""

    aliases: tuple[str, ...] = field(default=(), metadata=_check(_aliases))
    """Other names of this relay, "[msrp[s]://]host[:port]": with the listen addresses and
    use_path_addr they make the URIs that name us (msrpd/selfuri.py). A next hop that is ours
    is routed again inside the relay, never over a connection to itself (issue 12, item 9).
    No scheme: every scheme we serve; no port: every listen port."""

    event_callback: str = field(default="ksr_msrp_event", metadata=_IDENTIFIER)
    """Name of the route function called for each frame."""

    route: Path | None = field(default=None, metadata=_FILE)
    """Routing script. None: the bundled cmap route."""

    max_body: int = field(default=1024 * 1024, metadata=_integer(1024))
    """Largest body, in bytes, handed over as one frame; larger bodies are streamed."""

    max_head: int = field(default=16 * 1024, metadata=_integer(1024, 1024 * 1024))
    """Largest first line plus header block, in bytes."""

    connect_timeout: float = field(default=10.0, metadata=_SECONDS)
    """Seconds an outbound connection to a next hop may take to connect (TLS included)."""

    connect_fail_ttl: float = field(default=5.0, metadata=_SECONDS)
    """Seconds a next hop whose connect failed is remembered: frames for it fail at once."""

    max_connects: int = field(default=256, metadata=_integer(1))
    """Outbound connects in flight per worker; a frame needing one more fails."""

    max_connects_per_conn: int = field(default=8, metadata=_integer(1))
    """Outbound connects in flight that frames from one connection may have started."""

    connect_rate: float = field(default=20.0, metadata=_RATE)
    """Outbound connects per second that frames from one connection may start (a burst of
    that many, at least 1, refilled at that rate): naming a new next hop in every frame
    stays cheap."""

    max_connecting_bytes: int = field(default=16 * 1024 * 1024, metadata=_integer(1024))
    """Bytes per worker that may wait in outbound connections still connecting."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    realm: str = field(default="myrealm", metadata=_REALM)
    """Digest realm in 401 challenges (RFC 4976 §5.1); the module documentation's examples
    use "myrealm"."""

    users: Path | None = field(default=None, metadata=_PATH)
    """SQLite user store (`msrpd user add` creates it). None: AUTH is answered by the route."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    certificate: Path | None = field(default=None, metadata=_FILE)
    """PEM certificate chain; required when core.listen has a tls: address."""

    private_key: Path | None = field(default=None, metadata=_FILE)
    """PEM private key; required when core.listen has a tls: address."""

    ca: Path | None = field(default=None, metadata=_FILE)
    """PEM CA bundle for client certificates; required by verify_client."""

    verify_client: bool = field(default=False, metadata=_BOOLEAN)
    """Ask for and verify a client certificate."""


@dataclass(frozen=True, slots=True)
class ControlSettings:
    fifo: Path | None = field(default=None, metadata=_PATH)
    """Control FIFO. None: run_dir/msrpd.fifo."""


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: str | None = field(default=None, metadata=_address((), port_required=True))
    """"host:port" of the metrics endpoint, IPv6 in brackets. None: no endpoint."""


@dataclass(frozen=True, slots=True)
class LogSettings:
    target: LogTarget = field(default="stderr", metadata=_LOG_TARGET)
    """Where log lines go: stderr (with `start` as a daemon: run_dir/msrpd.log), a file, or
    syslog (/dev/log, facility daemon)."""

    file: Path | None = field(default=None, metadata=_PATH)
    """Log file when target is "file". None: run_dir/msrpd.log."""

    json: bool = field(default=False, metadata=_BOOLEAN)
    """One JSON object per line (time, level, pid, logger, message, and the fields of an
    accounting record) instead of text."""

    accounting: bool = field(default=True, metadata=_BOOLEAN)
    """Log one `msrpd.acct` line per session when it ends (its connection closes)."""


@dataclass(frozen=True, slots=True)
class Settings:
    core: CoreSettings = field(default_factory=CoreSettings)
    msrp: MsrpSettings = field(default_factory=MsrpSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: Path | None = None
    """The file these settings came from (absolute), or None for the embedded defaults."""

    @property
    def pidfile(self) -> Path:
        return self.core.run_dir / "msrpd.pid"

    @property
    def lockfile(self) -> Path:
        return self.core.run_dir / "msrpd.lock"

    @property
    def log_path(self) -> Path:
        return self.log.file or self.core.run_dir / "msrpd.log"

    @property
    def fifo_path(self) -> Path:
        return self.core.run_dir / "msrpd.fifo" if self.control.fifo is None else self.control.fifo


# Loading --------------------------------------------------------------------------------------

_Problems = list[tuple[str, str]]
_SECTIONS: Final[Mapping[str, type[Any]]] = {
    "core": CoreSettings,
    "msrp": MsrpSettings,
    "auth": AuthSettings,
    "tls": TlsSettings,
    "control": ControlSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
}


def load_config(path: Path | None, *, children: int | None = None) -> Settings:
    """Load settings from a TOML file, or the embedded defaults when `path` is None.

    Args:
        path: the file to read; relative paths inside it are relative to its directory.
        children: overrides core.children, checked the same way.

    Returns:
        The settings, with `source` set to the absolute path of the file.

    Raises:
        ConfigError: listing every problem found (the file is missing, is not TOML, or has
            unknown keys or bad values).
    """
    source = None if path is None else path.absolute()
    data = {} if source is None else _read_toml(source)
    base = Path() if source is None else source.parent
    problems = [(name, "unknown section") for name in data if name not in _SECTIONS]
    values = {name: _section(name, data.get(name, {}), base, problems) for name in _SECTIONS}
    if children is not None:
        try:
            values["core"]["children"] = _checks(CoreSettings)["children"](children, base)
        except _Invalid as exc:
            problems.extend(("core.children (override)", message) for message in exc.args)
    settings = Settings(
        **{name: cls(**values[name]) for name, cls in _SECTIONS.items()}, source=source
    )
    _cross_check(settings, problems)
    if problems:
        raise ConfigError(*(f"{key}: {message}" for key, message in problems), source=source)
    return settings


def _checks(cls: type[Any]) -> dict[str, _Check]:
    return {f.name: f.metadata["check"] for f in fields(cls)}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError("no such file", source=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("invalid TOML: not UTF-8 text", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=path) from None


def _section(name: str, table: Any, base: Path, problems: _Problems) -> dict[str, Any]:
    if not isinstance(table, dict):
        problems.append((name, f"must be a table, got {_shown(table)}"))
        return {}
    checks = _checks(_SECTIONS[name])
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in checks:
            close = difflib.get_close_matches(key, checks, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((f"{name}.{key}", f"unknown key{hint}"))
            continue
        try:
            values[key] = checks[key](raw, base)
        except _Invalid as exc:
            problems.extend((f"{name}.{key}", message) for message in exc.args)
    return values


def _cross_check(settings: Settings, problems: _Problems) -> None:
    """Rules between keys, skipped where a key involved already has a problem."""
    bad = {key for key, _ in problems}
    msrp, tls = settings.msrp, settings.tls
    lo, hi = msrp.auth_min_expires, msrp.auth_max_expires
    if not bad & {"msrp.auth_min_expires", "msrp.auth_max_expires"} and hi < lo:
        problems.append(("msrp.auth_max_expires", f"must be >= auth_min_expires ({lo}), got {hi}"))
    tls_listen = next((a for a in settings.core.listen if a.proto == "tls"), None)
    for key in ("certificate", "private_key"):
        if tls_listen is not None and getattr(tls, key) is None and f"tls.{key}" not in bad:
            problems.append((f"tls.{key}", f"required by the listen address {tls_listen}"))
    if tls.verify_client and tls.ca is None and "tls.ca" not in bad:
        problems.append(("tls.ca", "required when tls.verify_client is true"))
