"""Graceful stop with receivers over TLS and over WSS (issue 12 item 5, RFC 4975 §7.1.2): at
the give-up the relay shuts a silent receiver's socket, and every frame not wholly passed to
the kernel by then is reported. Over TLS that count must include the TLS records still queued
under the TLS layer: a record half in the kernel never decrypts at the receiver. Every SEND
answered 200 is at its receiver once, in order, or reported to its sender; never both, never
neither. test_stop.py has the plain TCP case and the helpers."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import trustme

from ..msrpclient import MsrpClient
from ..websocket.wsclient import WsMsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for
from .test_stop import (
    STOP_LINE,
    Pair,
    _authed,
    _log_time,
    _start_pairs,
    _stop_log,
    _wait_stalled,
    check_pair,
)

pytestmark = pytest.mark.serial
"""A flood and a stop whose give-up margin must hold the REPORTs' way (test_stop.py)."""

BODIES = (120, 1500)
WIRES = ("tls", "wss")


def _certificates(tmp_path: Path) -> tuple[dict[str, object], ssl.SSLContext]:
    """The relay's [tls] section and a client context that trusts its certificate."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return {"certificate": str(cert_file), "private_key": str(key_file)}, client


def _small_socket(port: int) -> socket.socket:
    """Connected to `port` with a phone's receive buffer and a real network's segments: what
    the kernels hold for a Bob who stopped reading stays small (test_stop._ends)."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 15)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def _bob(relay: Relay, wire: str, ctx: ssl.SSLContext) -> MsrpClient:
    """Bob over TLS (msrps) or WSS, authenticated."""
    bob: MsrpClient
    if wire == "tls":
        assert relay.tls_port
        sock = ctx.wrap_socket(_small_socket(relay.tls_port), server_hostname="localhost")
        bob = MsrpClient(relay.tls_port, tls=ctx, timeout=30, sock=sock)
    else:
        assert relay.wss_port
        sock = _small_socket(relay.wss_port)
        # Nothing reads for him until he asks (tests/websocket/wsconn.py): the relay's bytes
        # stay in the kernels and in the relay.
        bob = WsMsrpClient(relay.wss_port, tls=ctx, timeout=30, sock=sock)
    assert bob.auth("bob", PASSWORDS["bob"], REALM).frame.code == 200
    return bob


def test_stop_over_tls_and_wss_delivers_or_reports_every_acknowledged_send(
    make_relay, tmp_path: Path
) -> None:
    """Alices over TCP flood Bobs over TLS and over WSS who stopped reading, 120 B and 1500 B
    bodies, all on one worker; the stop gives up on them, and each Bob reads what is left
    once the relay is gone. Each Bob has SENDs delivered and SENDs reported."""
    tls, ctx = _certificates(tmp_path)
    relay: Relay = make_relay(children=1, core={"drain_timeout": 10}, tls=tls, websocket={})
    assert relay.start().returncode == 0, relay.log()
    kinds = [(wire, body) for wire in WIRES for body in BODIES]
    pairs = [
        Pair(i, _authed(relay.port, "alice", SO_SNDBUF=1 << 16), _bob(relay, wire, ctx), body=body)
        for i, (wire, body) in enumerate(kinds)
    ]
    try:
        _flood_then_stop(relay, pairs)
    finally:
        for pair in pairs:
            pair.alice.close()
            pair.bob.close()


def _flood_then_stop(relay: Relay, pairs: list[Pair]) -> None:
    flood, done, threads = _start_pairs(pairs)
    flood.set()
    time.sleep(1.0)
    for pair in pairs:
        pair.bob_reading.clear()  # receivers stop reading until the relay is gone
    _wait_stalled(pairs)
    results: list[subprocess.CompletedProcess[str]] = []
    stopper = threading.Thread(target=lambda: results.append(relay.cli("stop", "--timeout", "30")))
    stopper.start()
    wait_for(lambda: STOP_LINE.search(relay.log()), 10, "the worker's stop")
    stopper.join(60)
    assert results and results[0].returncode == 0, results
    for pair in pairs:
        pair.before = len(pair.delivered)
        pair.bob_reading.set()  # Bob reads what is left in his socket, until EOF
    done.set()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert "SIGKILL" not in relay.log(), _stop_log(relay)
    term = _log_time(next(line for line in relay.log().splitlines() if STOP_LINE.search(line)))
    for pair in pairs:
        check_pair(relay, pairs, pair, term)
        assert pair.reported, (pair.index, _stop_log(relay))  # some SENDs never reached Bob
