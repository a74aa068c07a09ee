"""What every `msrpd` command shares: the `-c FILE` option and loading the settings it names.

Rules: one definition, used by cli/main.py and control/client.py alike, so every command finds its
instance the same way and reports a bad configuration with the same message and exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from ..config import Settings, load_config
from ..errors import ConfigError

__all__ = ["EXIT_CONFIG", "config_option", "settings_or_exit"]

EXIT_CONFIG = 2

config_option = click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: the embedded defaults).",
)


def settings_or_exit(
    config: Path | None, children: int | None = None, route: bool = False
) -> Settings:
    """The settings of `config` (and, with `route`, a check that its routing script loads);
    on error, the problems on stderr and exit status EXIT_CONFIG."""
    try:
        settings = load_config(config, children=children)
    except ConfigError as exc:
        _invalid(exc)
    if route:
        # Imported here, not above: routing (and with it the protocol stack) is 0.1 s of the
        # start of every command, and only start, reload and check-config load a route.
        from ..routing import RouteLoadError, load_route  # noqa: PLC0415

        try:
            load_route(settings.msrp.route, settings.msrp.event_callback)
        except RouteLoadError as exc:
            _invalid(exc)
    return settings


def _invalid(problem: Exception) -> NoReturn:
    click.echo(f"msrpd: invalid configuration:\n{problem}", err=True)
    sys.exit(EXIT_CONFIG)
