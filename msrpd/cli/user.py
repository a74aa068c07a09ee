"""`msrpd user add|del|list`: the digest user store ([auth] users: SQLite or PostgreSQL, users/)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ..users import UserStore
from ..users.open import open_store
from .options import EXIT_CONFIG, config_option, settings_or_exit

__all__ = ["user"]

T = TypeVar("T")
EXIT_STORE = 1


@click.group()
def user() -> None:
    """Manage the digest user store ([auth] users)."""


def _store(config: Path | None) -> tuple[UserStore, str]:
    settings = settings_or_exit(config)
    store = open_store(settings.auth)
    if store is None:
        click.echo("msrpd: [auth] users is not set in the configuration", err=True)
        sys.exit(EXIT_CONFIG)
    return store, settings.auth.realm


def _run(store: UserStore, job: Callable[[UserStore], T]) -> T:
    """`job` on the store, closed after; a store that fails is reported, not a traceback
    (its messages never hold a password: users/pgadmin.py)."""
    try:
        return job(store)
    except Exception as exc:  # sqlite3.Error, UserDbError
        click.echo(f"msrpd: user store: {exc}", err=True)
        sys.exit(EXIT_STORE)
    finally:
        store.close()


@user.command("add")
@config_option
@click.argument("username")
@click.password_option(prompt=True)
def user_add(config: Path | None, username: str, password: str) -> None:
    """Add or replace USERNAME (only HA1 is stored)."""
    store, realm = _store(config)
    _run(store, lambda s: s.add(username, realm, password))
    click.echo(f"user {username} ({realm}) saved")


@user.command("del")
@config_option
@click.argument("username")
def user_del(config: Path | None, username: str) -> None:
    """Delete USERNAME."""
    store, realm = _store(config)
    if not _run(store, lambda s: s.delete(username, realm)):
        click.echo(f"no user {username} in realm {realm}", err=True)
        sys.exit(1)
    click.echo(f"user {username} deleted")


@user.command("list")
@config_option
def user_list(config: Path | None) -> None:
    """List users and realms."""
    store, _ = _store(config)
    for username, realm in _run(store, lambda s: s.list()):
        click.echo(f"{username}\t{realm}")
