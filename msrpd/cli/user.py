"""`msrpd user add|del|list`: the digest user store ([auth] users, routing/users.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..routing.users import UserStore
from .options import EXIT_CONFIG, config_option, settings_or_exit

__all__ = ["user"]


@click.group()
def user() -> None:
    """Manage the digest user store ([auth] users)."""


def _store(config: Path | None) -> tuple[UserStore, str]:
    settings = settings_or_exit(config)
    if settings.auth.users is None:
        click.echo("msrpd: [auth] users is not set in the configuration", err=True)
        sys.exit(EXIT_CONFIG)
    return UserStore(settings.auth.users), settings.auth.realm


@user.command("add")
@config_option
@click.argument("username")
@click.password_option(prompt=True)
def user_add(config: Path | None, username: str, password: str) -> None:
    """Add or replace USERNAME (only HA1 is stored)."""
    store, realm = _store(config)
    store.add(username, realm, password)
    click.echo(f"user {username} ({realm}) saved")


@user.command("del")
@config_option
@click.argument("username")
def user_del(config: Path | None, username: str) -> None:
    """Delete USERNAME."""
    store, realm = _store(config)
    if not store.delete(username, realm):
        click.echo(f"no user {username} in realm {realm}", err=True)
        sys.exit(1)
    click.echo(f"user {username} deleted")


@user.command("list")
@config_option
def user_list(config: Path | None) -> None:
    """List users and realms."""
    store, _ = _store(config)
    for username, realm in store.list():
        click.echo(f"{username}\t{realm}")
