"""The `msrpd` command line (click).

Rules: settings live in the config file, not in flags (style rule 19). The supervisor commands
(start, stop, reload, status, ctl) join this group as they are built.
"""

from __future__ import annotations

import click

from . import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="msrpd")
def main() -> None:
    """msrpd: an MSRP relay (RFC 4975, RFC 4976)."""
