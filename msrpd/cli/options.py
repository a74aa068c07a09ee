"""What every `msrpd` command shares: the `-c FILE` option and loading the settings it names.

Rules: one definition, used by cli/main.py and control/client.py alike, so every command finds its
instance the same way and reports a bad configuration with the same message and exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import Settings, load_config
from ..errors import ConfigError
from ..routing import RouteLoadError, load_route

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
        if route:
            load_route(settings.msrp.route, settings.msrp.event_callback)
    except (ConfigError, RouteLoadError) as exc:
        click.echo(f"msrpd: invalid configuration:\n{exc}", err=True)
        sys.exit(EXIT_CONFIG)
    return settings
