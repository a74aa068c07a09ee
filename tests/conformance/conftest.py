"""A live msrpd running the default relay route, for the rfc-checklist §6 cases.

The relay has two workers, a plain TCP and a TLS listener (a trustme CA), the name
`relay.example.net` (an alias, and use_path_addr with the TLS port, so Use-Path is
`msrps://relay.example.net:<tls port>/<sid>;tcp` as RFC 4976 §4.2 wants: a name and a port),
and a user store with alice and bob. Clients ("A") AUTH over TLS; peers without a relay ("B")
are plain TCP, either connecting to the relay or listening for it (peer.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from ..integration.relay import PASSWORDS, REALM, Relay
from ..msrpclient import MsrpClient

FQDN = "relay.example.net"
MIN_EXPIRES = 1
MAX_EXPIRES = 600


@dataclass
class Net:
    """The relay under test and how to reach it."""

    relay: Relay
    tls: ssl.SSLContext
    """A client context trusting the relay's CA."""

    @property
    def port(self) -> int:
        return self.relay.port

    @property
    def tls_port(self) -> int:
        assert self.relay.tls_port is not None
        return self.relay.tls_port

    @property
    def bare(self) -> str:
        """The relay's bare URI by name (RFC 4976 §5.1), as a client addresses an AUTH."""
        return f"msrps://{FQDN}:{self.tls_port};tcp"

    def client(self) -> MsrpClient:
        """A TLS connection, not authenticated."""
        return MsrpClient(self.tls_port, tls=self.tls)

    def plain(self) -> MsrpClient:
        """A plain TCP connection (B, a peer without a relay of its own)."""
        return MsrpClient(self.port)

    def authed(self, user: str = "alice", expires: int | None = None) -> MsrpClient:
        """A: a TLS client with a token (`use_path`)."""
        client = self.client()
        final = client.auth(user, PASSWORDS[user], REALM, expires)
        assert final.frame.code == 200, final.frame.buf
        return client


def start_relay(tmp: Path, **msrp: object) -> Net:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", FQDN)
    cert_file, key_file = tmp / "relay.pem", tmp / "relay.key"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    relay = Relay(
        children=2,
        msrp={"route": None, "aliases": [FQDN], **msrp},
        tls={"certificate": str(cert_file), "private_key": str(key_file)},
    )
    sections = relay.sections["msrp"]
    sections.setdefault("use_path_addr", f"{FQDN}:{relay.tls_port}")
    sections.setdefault("auth_min_expires", MIN_EXPIRES)
    sections.setdefault("auth_max_expires", MAX_EXPIRES)
    relay.write_config()
    result = relay.start()
    if result.returncode != 0:
        relay.stop()
        raise AssertionError(result.stderr + relay.log())
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return Net(relay, ctx)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """One relay for a test module (every test makes its own connections and tokens)."""
    found = start_relay(tmp_path_factory.mktemp("relay"))
    try:
        yield found
    finally:
        found.relay.stop()
