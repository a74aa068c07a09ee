"""[cluster]: the Redis (or Valkey) server several msrpd nodes share state through (issue 17),
and this node's name in it. No `redis`: no cluster, and nothing of it is imported or run.

Rules: the URL is checked here without importing the client (the hot path never pays for it);
it may carry a password (in its userinfo or its query), so its repr, its str and every
message about it give `redacted`, as config/userdb.py does for PostgreSQL;
a node name is a short token of letters, digits, '.', '_', '-', since it is part of Redis keys
and log lines.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from .checks import FILE, SECONDS, Invalid, check, rule, shown
from .secret import SecretUrl

__all__ = ["REDIS_SCHEMES", "ClusterSettings"]

REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
_NODE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,32}")


def _redact(url: SplitResult) -> str:
    """`url` without its password: the user stays, the query goes whole (redis-py takes
    `?password=` there too)."""
    host = url.netloc.rpartition("@")[2]
    user = f"{url.username}@" if url.username else ""
    return f"{url.scheme}://{user}{host}{url.path}"


def _redis_url(raw: Any, base: object) -> SecretUrl:
    if not isinstance(raw, str) or not raw:
        raise Invalid(f"must be a redis://, rediss:// or unix:// URL, got a {type(raw).__name__}")
    try:
        url = urlsplit(raw)
    except ValueError as exc:  # its reason names no part of the URL
        raise Invalid(f"not a URL ({exc})") from None
    redacted = _redact(url)
    try:
        port = url.port
    except ValueError as exc:
        raise Invalid(f"not a URL ({exc}): {shown(redacted)}") from None
    if url.scheme not in REDIS_SCHEMES:
        raise Invalid(f"scheme must be one of redis, rediss, unix, got {shown(redacted)}")
    if url.scheme == "unix" and not url.path:
        raise Invalid(f"a unix:// URL needs a socket path, got {shown(redacted)}")
    if url.scheme != "unix" and not url.hostname:
        raise Invalid(f"needs a host (redis://host:port/db), got {shown(redacted)}")
    if port == 0:
        raise Invalid(f"port must be 1..65535, got {shown(redacted)}")
    db = url.path.strip("/") if url.scheme != "unix" else ""
    if db and not db.isdigit():
        raise Invalid(f"the path is the database number, got {shown(redacted)}")
    return SecretUrl(raw, redacted)


def _default_node() -> str:
    """The host name's first label: what an operator calls the machine."""
    name = socket.gethostname().split(".")[0]
    return name if _NODE_RE.fullmatch(name) else "msrpd"


NODE: Final = rule(
    "1 to 64 letters, digits, '.', '_', '-' (starting with a letter or digit)",
    lambda v: isinstance(v, str) and _NODE_RE.fullmatch(v) is not None,
)
MAX_TIMEOUT: Final = 5.0


def _timeout(raw: Any, base: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_TIMEOUT:
        raise Invalid(
            f"must be a number of seconds > 0 and at most {MAX_TIMEOUT:g}, got {shown(raw)}"
        )
    return float(raw)


PREFIX: Final = rule(
    "1 to 32 letters, digits, '.', '_', ':', '-'",
    lambda v: isinstance(v, str) and _PREFIX_RE.fullmatch(v) is not None,
)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    redis: SecretUrl | None = field(default=None, metadata=check(_redis_url))
    """redis://[user:password@]host[:port][/db], rediss:// (TLS) or unix:///path. None: this
    node is alone (no cluster). Shown only redacted (no password, no query)."""

    node: str = field(default_factory=_default_node, metadata=NODE)
    """This node's name in the cluster, unique among its nodes. Default: the host name."""

    key_prefix: str = field(default="msrpd:", metadata=PREFIX)
    """Put before every Redis key and channel, so several clusters can share one server."""

    timeout: float = field(default=2.0, metadata=check(_timeout))
    """Seconds a connect or a command to Redis may take before Redis counts as down. At most
    MAX_TIMEOUT: the supervisor's loop waits for the agent's cluster control calls (up to
    timeout + 1.5 s), and nothing else runs meanwhile."""

    heartbeat: float = field(default=1.0, metadata=SECONDS)
    """Seconds between this node's writes of its registry entry (and directory changes)."""

    node_ttl: float = field(default=5.0, metadata=SECONDS)
    """Seconds a node's registry entry outlives its last heartbeat: a node silent that long
    is shown as lost. More than heartbeat."""

    retry_max: float = field(default=5.0, metadata=SECONDS)
    """The longest wait between two connects while Redis is down (the wait doubles from
    0.1 s up to it)."""

    node_ca: Path | None = field(default=None, metadata=FILE)
    """PEM file of the CA(s) that issue the nodes' certificates: a TLS peer whose certificate
    one of them issued is another node (cluster/nodecerts.py). Set, a frame for a token of
    another node is forwarded to it; unset, it gets 481 (README "Running a cluster")."""
