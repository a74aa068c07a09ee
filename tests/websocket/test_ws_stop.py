"""A stopping relay tells its WebSocket clients it is going away (RFC 6455 §7.4.1: 1001),
where a connection it closes for any other reason gets 1000 (test_ws_relay.py)."""

from __future__ import annotations

import socket

from .test_ws_relay import close_code, closed_by_relay, raw_ws, started


def test_stop_closes_with_going_away(make_relay) -> None:
    relay = started(make_relay, websocket={})
    socks = [raw_ws(relay.ws_port) for _ in range(3)]  # on either worker
    for sock in socks:
        sock.settimeout(30)
    result = relay.cli("stop", "--timeout", "15")
    assert result.returncode == 0, result.stderr + relay.log()
    for sock in socks:
        assert close_code(closed_by_relay(sock)) == 1001
        sock.close()
    probe = socket.socket()
    assert probe.connect_ex(("127.0.0.1", relay.ws_port)) != 0  # stopped, not just closed
    probe.close()
