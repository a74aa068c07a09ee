"""Injection by address (issue 12 item 2): knowing a client's address (the URI it puts in
From-Path, its ephemeral port) must not let another connection write to it. A To-Path URI
reaches only connections the relay opened; a client's own connection is reached through its
session (cmap) or an address the route chose (set_dst, the htable route)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, wait_for

ROUTES = {
    "cmap": None,
    "htable": Path(__file__).parents[2] / "etc" / "routes" / "htable.py",
}
QUIET = 1.0  # seconds a client waits to show that nothing more arrives


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port)
    final = client.auth(user, PASSWORDS[user], REALM, expires=1900)
    assert final.frame.code == 200, final.frame.buf
    return client


def _nothing_more(*clients: MsrpClient) -> None:
    for client in clients:
        with pytest.raises(TimeoutError):
            got = client.recv(QUIET)
            raise AssertionError(f"unexpected frame: {bytes(got.frame.buf)!r}")


def _exchange(sender: MsrpClient, receiver: MsrpClient, body: bytes) -> None:
    tid = sender.send_message(receiver, body, message_id=body.decode())
    ok = sender.recv()
    assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
    got = receiver.recv()
    assert (got.frame.method, got.frame.tid, got.body) == (b"SEND", tid, body)
    assert got.frame.from_path[1:] == [sender.uri]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_an_address_is_not_a_way_into_a_clients_connection(make_relay, route: str) -> None:
    script = ROUTES[route]
    relay: Relay = make_relay(children=2, msrp={"route": str(script)} if script else {})
    assert relay.start().returncode == 0, relay.log()
    relay_uri = f"msrp://127.0.0.1:{relay.port};tcp"
    shm = layout_for(relay.settings()).attach_all()
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    with MsrpClient(relay.port) as mallory, alice, bob:
        _exchange(alice, bob, b"before")
        x = "msrp://127.0.0.1:9/x;tcp"
        # (a) A SEND "through" Alice's address, with a forged From-Path.
        headers = [("Message-ID", "forged-send"), ("Byte-Range", "1-6/6")]
        mallory.request("SEND", f"{relay_uri} {alice.uri} {x}", headers, b"forged")
        assert mallory.recv().frame.code == 200  # the relay's hop-by-hop 200
        _nothing_more(alice, bob)
        # (b) A 481 for Alice's SEND in flight, next to the real 200.
        tid = alice.send_message(bob, b"in flight", message_id="in-flight")
        mallory.send_raw(
            b"MSRP %s 481 Session Does Not Exist\r\nTo-Path: %s %s\r\nFrom-Path: %s\r\n"
            b"-------%s$\r\n"
            % (tid, relay_uri.encode(), alice.uri.encode(), mallory.uri.encode(), tid)
        )
        got = bob.recv()
        assert (got.frame.tid, got.body) == (tid, b"in flight")
        ok = alice.recv()
        assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
        _nothing_more(alice, bob)
        # (c) A REPORT "through" Bob's address.
        report = [("Message-ID", "in-flight"), ("Byte-Range", "1-9/9"), ("Status", "000 200 OK")]
        mallory.request("REPORT", f"{relay_uri} {bob.uri} {x}", report, tid=new_tid())

        _nothing_more(alice, bob)
        # The 481 was a response with nowhere to go: dropped, and counted.
        wait_for(
            lambda: shm.stats.total()["responses_dropped"] == 1, 5, "the dropped response counted"
        )
        _exchange(alice, bob, b"after")
        _exchange(bob, alice, b"back")
        _nothing_more(alice, bob)
    shm.close()
