"""`[auth] users`: an SQLite file (a path) or a PostgreSQL database (a `postgresql://` URL).

Rules: the URL may carry a password, so it is never shown: its repr, its str and every message
about it give `redacted` (user, host, port and database, no password, no query). A bad URL is
refused when the configuration is loaded, with libpq's own reason (psycopg parses it as libpq
will when connecting), the password cut out of that reason too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from .checks import Invalid, shown
from .secret import SecretUrl

__all__ = ["PG_SCHEMES", "UsersSource", "parse_users"]

PG_SCHEMES: Final = ("postgresql://", "postgres://")  # the two libpq accepts (libpq §34.1.1)


UsersSource = Path | SecretUrl


def parse_users(raw: Any, base: Path) -> UsersSource:
    """The check of `[auth] users`: a SecretUrl for a PostgreSQL URL, else a path (relative to
    the configuration file's directory)."""
    if not isinstance(raw, str) or not raw:
        raise Invalid(f"must be a file path or a postgresql:// URL, got {shown(raw)}")
    if not raw.lower().startswith(PG_SCHEMES):
        if "://" in raw:
            scheme = raw.split("://", 1)[0]
            raise Invalid(f"{scheme}:// is not a store: give a file path or a postgresql:// URL")
        if "\0" in raw:
            raise Invalid("must not contain a NUL character")
        return base / raw
    return _pg_url(raw)


def _pg_url(raw: str) -> SecretUrl:
    # psycopg takes 0.2 s to import: only where a URL is configured.
    from psycopg import conninfo  # noqa: PLC0415

    try:
        params = conninfo.conninfo_to_dict(raw)
    except Exception as exc:  # psycopg.ProgrammingError, with libpq's reason
        raise Invalid(f"not a valid PostgreSQL URL: {_scrub(str(exc).strip(), raw)}") from None
    redacted = _redact(raw, params)
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise Invalid(f"not a valid PostgreSQL URL ({redacted}): port {port!r}")
    return SecretUrl(raw, redacted)


_QUOTED: Final = re.compile(r'"[^"]*"')
_SECRETS: Final = (re.compile(r"://[^/@?]*?:([^@/?]*)@"), re.compile(r"[?&]password=([^&]*)"))


def _scrub(reason: str, raw: str) -> str:
    """libpq's reason without any password the URL holds: libpq quotes the token it refused,
    and a quoted token holding a password becomes "***"."""
    for pattern in _SECRETS:
        for secret in pattern.findall(raw):
            if not secret:
                continue
            reason = _QUOTED.sub(_hider(secret), reason)
            if secret in reason:
                return "libpq cannot parse it"
    return reason


def _hider(secret: str) -> Callable[[re.Match[str]], str]:
    return lambda m: '"***"' if secret in m[0] else m[0]


def _redact(raw: str, params: dict[str, Any]) -> str:
    scheme = raw.split("://", 1)[0]
    user = f"{params['user']}@" if params.get("user") else ""
    hosts = [f"[{h}]" if ":" in h else h for h in str(params.get("host", "")).split(",")]
    ports = str(params.get("port", "")).split(",")
    if len(ports) == len(hosts) and ports != [""]:
        hosts = [f"{h}:{p}" for h, p in zip(hosts, ports, strict=True)]
    return f"{scheme}://{user}{','.join(hosts)}/{params.get('dbname', '')}"
