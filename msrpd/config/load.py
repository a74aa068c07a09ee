"""The TOML loader: every check run, every problem listed in one ConfigError.

Rules: a relative path in the file is relative to the file's directory. Unknown sections and
keys are problems (with a "did you mean" when one is close). Rules between keys run last,
skipped where a key involved already has a problem. No I/O but reading the file and checking
that the files it names exist.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigError
from .checks import Check, Invalid, shown
from .cluster import ClusterSettings
from .sections import (
    AuthSettings,
    ControlSettings,
    CoreSettings,
    LimitsSettings,
    LogSettings,
    MetricsSettings,
    MsrpSettings,
    Settings,
    TlsSettings,
    WebSocketSettings,
)

__all__ = ["load_config"]

_Problems = list[tuple[str, str]]
_SECTIONS: Final[Mapping[str, type[Any]]] = {
    "core": CoreSettings,
    "msrp": MsrpSettings,
    "limits": LimitsSettings,
    "auth": AuthSettings,
    "tls": TlsSettings,
    "websocket": WebSocketSettings,
    "control": ControlSettings,
    "metrics": MetricsSettings,
    "log": LogSettings,
    "cluster": ClusterSettings,
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
        except Invalid as exc:
            problems.extend(("core.children (override)", message) for message in exc.args)
    settings = Settings(
        **{name: _build(cls, values[name]) for name, cls in _SECTIONS.items()}, source=source
    )
    _cross_check(settings, problems)
    if problems:
        raise ConfigError(*(f"{key}: {message}" for key, message in problems), source=source)
    return settings


def _checks(cls: type[Any]) -> dict[str, Check]:
    """TOML key -> its check, the keys of a nested group (sections.group) included."""
    found: dict[str, Check] = {}
    for f in fields(cls):
        if "group" in f.metadata:
            found.update(_checks(f.metadata["group"]))
        else:
            found[f.name] = f.metadata["check"]
    return found


def _build(cls: type[Any], values: dict[str, Any]) -> Any:
    """A section from its flat TOML values: a nested group takes the keys of its fields."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if "group" in f.metadata:
            kwargs[f.name] = _build(f.metadata["group"], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


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
        problems.append((name, f"must be a table, got {shown(table)}"))
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
        except Invalid as exc:
            problems.extend((f"{name}.{key}", message) for message in exc.args)
    return values


def _cross_check(settings: Settings, problems: _Problems) -> None:
    """Rules between keys, skipped where a key involved already has a problem."""
    bad = {key for key, _ in problems}
    msrp, tls = settings.msrp, settings.tls
    lo, hi = msrp.auth_min_expires, msrp.auth_max_expires
    if not bad & {"msrp.auth_min_expires", "msrp.auth_max_expires"} and hi < lo:
        problems.append(("msrp.auth_max_expires", f"must be >= auth_min_expires ({lo}), got {hi}"))
    tls_listen = next((a for a in settings.core.listen if a.secure), None)
    for key in ("certificate", "private_key"):
        if tls_listen is not None and getattr(tls, key) is None and f"tls.{key}" not in bad:
            problems.append((f"tls.{key}", f"required by the listen address {tls_listen}"))
    if tls.verify_client and tls.ca is None and "tls.ca" not in bad:
        problems.append(("tls.ca", "required when tls.verify_client is true"))
    _cross_check_cluster(settings, bad, problems)


def _cross_check_cluster(settings: Settings, bad: set[str], problems: _Problems) -> None:
    cluster = settings.cluster
    if cluster.redis is None:
        return
    if settings.msrp.use_path_addr is None and "msrp.use_path_addr" not in bad:
        # A peer's frames must reach the node holding the client's connection (issue 17).
        problems.append(("msrp.use_path_addr", "required when cluster.redis is set"))
    if (
        not bad & {"cluster.heartbeat", "cluster.node_ttl"}
        and cluster.node_ttl <= cluster.heartbeat
    ):
        problems.append(
            ("cluster.node_ttl", f"must be more than heartbeat ({cluster.heartbeat:g})")
        )
    tls = settings.tls
    if cluster.node_ca is not None and (tls.certificate is None or tls.private_key is None):
        # Without a certificate to present, the next node sees a client, not a node: its
        # frames would be rated and counted as failures, and a loop would go unnoticed.
        problems.append(("cluster.node_ca", "needs tls.certificate and tls.private_key"))
    elif (
        cluster.node_ca is not None
        and tls.ca is not None
        and tls.ca.resolve() == cluster.node_ca.resolve()
    ):
        # Every client certificate tls.ca verifies would make its holder a node.
        problems.append(("cluster.node_ca", "must not be tls.ca: a CA for the nodes alone"))
