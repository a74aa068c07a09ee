"""The checks of the settings' fields: each takes a TOML value and the config file's directory
and returns the field's value, or raises Invalid with one message per problem.

Rules: a field holds its check in its metadata (`check(fn)` and the constants below are field
metadata), so the schema cannot drift from the tree; the loader prefixes each message with the
key. Where Kamailio clamps or rewrites a value, we refuse it.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .address import ListenAddress, check_address, parse_listen

__all__ = [
    "ALIASES",
    "BOOLEAN",
    "CACHE_TTL",
    "FILE",
    "IDENTIFIER",
    "LISTEN",
    "PATH",
    "RATE",
    "RATE_OR_OFF",
    "REALM",
    "SCHEMES",
    "SECONDS",
    "SECONDS_OR_OFF",
    "SQL_NAME",
    "Check",
    "Invalid",
    "address",
    "check",
    "integer",
    "one_of",
    "shown",
]

SCHEMES: Final = ("msrp://", "msrps://")


class Invalid(Exception):
    """A value a check refuses: one message per problem in args."""


Check = Callable[[Any, Path], Any]


def check(fn: Check) -> Mapping[str, Check]:
    return {"check": fn}


def shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def rule(wanted: str, ok: Callable[[Any], bool]) -> Mapping[str, Check]:
    def validate(raw: Any, base: Path) -> Any:
        if not ok(raw):
            raise Invalid(f"must be {wanted}, got {shown(raw)}")
        return raw

    return check(validate)


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)  # a TOML bool is a Python int


def integer(lo: int, hi: int | None = None) -> Mapping[str, Check]:
    if hi is None:
        return rule(f"an integer >= {lo}", lambda v: _is_int(v) and v >= lo)
    return rule(f"an integer from {lo} to {hi}", lambda v: _is_int(v) and lo <= v <= hi)


def _seconds(raw: Any, base: Path) -> float:
    # 0 < raw < inf also refuses nan.
    if not (_is_int(raw) or isinstance(raw, float)) or not 0 < raw < math.inf:
        raise Invalid(f"must be a number of seconds > 0, got {shown(raw)}")
    return float(raw)


def _rate(raw: Any, base: Path) -> float:
    if not (_is_int(raw) or isinstance(raw, float)) or not 0 < raw < math.inf:
        raise Invalid(f"must be a number per second > 0, got {shown(raw)}")
    return float(raw)


def _rate_or_off(raw: Any, base: Path) -> float:
    if (_is_int(raw) or isinstance(raw, float)) and raw == 0:
        return 0.0
    try:
        return _rate(raw, base)
    except Invalid:
        raise Invalid(f"must be a number per second >= 0 (0: off), got {shown(raw)}") from None


def _seconds_or_off(raw: Any, base: Path) -> float:
    if (_is_int(raw) or isinstance(raw, float)) and raw == 0:
        return 0.0
    try:
        return _seconds(raw, base)
    except Invalid:
        raise Invalid(f"must be a number of seconds >= 0 (0: off), got {shown(raw)}") from None


def _string(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise Invalid(f"must be a non-empty string, got {shown(raw)}")
    return raw


BOOLEAN: Final = rule("true or false", lambda v: isinstance(v, bool))
IDENTIFIER: Final = rule(
    "a Python identifier",
    lambda v: isinstance(v, str) and v.isidentifier() and not keyword.iskeyword(v),
)
# The realm goes inside a quoted-string in WWW-Authenticate (RFC 2617 §1.2).
REALM: Final = rule(
    "a non-empty string without quotes, backslashes or control characters",
    lambda v: isinstance(v, str) and v != "" and all(c not in '"\\' and c.isprintable() for c in v),
)


_SQL_NAME: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", re.ASCII)
# A PostgreSQL table, bare or schema-qualified (quoted as identifiers all the same).
SQL_NAME: Final = rule(
    '"table" or "schema.table" (letters, digits, _; not starting with a digit)',
    lambda v: isinstance(v, str) and _SQL_NAME.fullmatch(v) is not None,
)


def _cache_ttl(raw: Any, base: Path) -> float:
    # At least a second: a frame routed again right after its answer came finds it there.
    if not (_is_int(raw) or isinstance(raw, float)) or not 1 <= raw <= 86400:
        raise Invalid(f"must be a number of seconds from 1 to 86400, got {shown(raw)}")
    return float(raw)


def _path(raw: Any, base: Path) -> Path:
    text = _string(raw)
    if "\0" in text:
        raise Invalid("must not contain a NUL character")
    return base / text  # an absolute text replaces base


def _existing_file(raw: Any, base: Path) -> Path:
    path = _path(raw, base)
    if not path.is_file():
        raise Invalid(f"no such file: {path}")
    return path


def address(schemes: tuple[str, ...], *, port_required: bool) -> Mapping[str, Check]:
    def validate(raw: Any, base: Path) -> str:
        text = _string(raw)
        try:
            check_address(text, schemes, port_required=port_required)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return text

    return check(validate)


def _aliases(raw: Any, base: Path) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise Invalid(f"must be a list of [msrp[s]://]host[:port] strings, got {shown(raw)}")
    errors: list[str] = []
    for item in raw:
        try:
            check_address(_string(item), SCHEMES, port_required=False)
        except (ValueError, Invalid) as exc:
            errors.append(str(exc))
    if errors:
        raise Invalid(*errors)
    return tuple(raw)


def _origins(raw: Any, base: Path) -> tuple[str, ...]:
    # An Origin is serialized as scheme://host[:port], compared as a string (RFC 6454 §6.2).
    if not isinstance(raw, list) or not all(
        isinstance(item, str) and "://" in item and item.isprintable() for item in raw
    ):
        raise Invalid(f"must be a list of scheme://host[:port] strings, got {shown(raw)}")
    return tuple(item.rstrip("/").lower() for item in raw)


def _listen(raw: Any, base: Path) -> tuple[ListenAddress, ...]:
    if not isinstance(raw, list) or not raw:
        raise Invalid(f"must be a non-empty list of proto:host:port strings, got {shown(raw)}")
    found: dict[tuple[str, int], ListenAddress] = {}
    errors: list[str] = []
    for item in raw:
        try:
            parsed = parse_listen(_string(item))
        except (ValueError, Invalid) as exc:
            errors.append(str(exc))
            continue
        key = (parsed.host, parsed.port)
        if key in found:
            errors.append(f"{str(parsed)!r} uses the same host and port as {str(found[key])!r}")
        found.setdefault(key, parsed)
    if errors:
        raise Invalid(*errors)
    return tuple(found.values())


def one_of(values: tuple[str, ...]) -> Mapping[str, Check]:
    return rule(f"one of {', '.join(values)}", values.__contains__)


SECONDS: Final = check(_seconds)
SECONDS_OR_OFF: Final = check(_seconds_or_off)
RATE: Final = check(_rate)
RATE_OR_OFF: Final = check(_rate_or_off)
PATH: Final = check(_path)
CACHE_TTL: Final = check(_cache_ttl)
FILE: Final = check(_existing_file)
ALIASES: Final = check(_aliases)
LISTEN: Final = check(_listen)
ORIGINS: Final = check(_origins)
