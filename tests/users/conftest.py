"""A private PostgreSQL (tests/pgserver.py) and msrpd relays whose users live in it.

Each relay runs the default relay route with a TLS listener (AUTH needs TLS, RFC 4976 §8),
as the conformance relay does, and `[auth] users` is a URL with a password: the role
`msrpd` (not a superuser) owning the database the test names.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ..integration.relay import LIMITS_OFF, REALM, Relay
from ..msrpclient import MsrpClient
from ..pgserver import PgServer

ROLE_PASSWORD = "msrpd-db-secret"


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        server.start()
        server.execute(f"CREATE ROLE msrpd LOGIN PASSWORD '{ROLE_PASSWORD}'")
        yield server
    finally:
        server.remove()


@dataclass
class Tls:
    cert: Path
    key: Path
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "relay.pem", tmp / "relay.key"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return Tls(cert, key, ctx)


def new_database(pg: PgServer, name: str) -> str:
    """A database `name` owned by the msrpd role; its URL (with the role's password)."""
    pg.execute(f"CREATE DATABASE {name} OWNER msrpd")
    return pg.url("msrpd", ROLE_PASSWORD, name)


def pg_relay(tls: Tls, url: str, children: int = 1, **auth: object) -> Relay:
    """A relay (not started) whose users are at `url`; `auth`: more [auth] keys (a lookup
    timeout of 10 s unless given: the suite runs tests side by side on a small machine)."""
    relay = Relay(
        children=children,
        msrp={"route": None},
        tls={"certificate": str(tls.cert), "private_key": str(tls.key)},
        users=False,
        limits=dict(LIMITS_OFF),
    )
    relay.sections["auth"] = {"realm": REALM, "users": url, "users_timeout": 10, **auth}
    relay.write_config()
    return relay


def started(relay: Relay) -> Relay:
    result = relay.start()
    if result.returncode != 0:
        relay.stop()
        raise AssertionError(result.stderr + relay.log())
    return relay


def client(relay: Relay, tls: Tls) -> MsrpClient:
    assert relay.tls_port is not None
    return MsrpClient(relay.tls_port, tls=tls.client)


def add_user(relay: Relay, name: str, password: str) -> None:
    out = relay.cli("user", "add", name, "--password", password)
    assert out.returncode == 0 and out.stdout == f"user {name} ({REALM}) saved\n", out.stderr
