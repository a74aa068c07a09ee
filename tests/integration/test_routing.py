"""Routing scripts in a running relay: the bundled cmap route as documented, script errors,
SIP on the MSRP port, relaying to a next hop over a new outbound connection."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from msrpd.protocol import Frame, FrameReader
from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for


def test_default_route_accepts_the_documented_password(make_relay) -> None:
    """Without [auth] users the cmap route checks the example's password, xyz123, in realm
    myrealm (Kamailio's example 1.18); anything else gets 401 again."""
    relay: Relay = make_relay(children=1, users=False)
    assert relay.start().returncode == 0
    with MsrpClient(relay.port) as alice:
        assert alice.auth("alice", "wrong", "myrealm").frame.code == 401
    with MsrpClient(relay.port) as alice, MsrpClient(relay.port) as bob:
        assert alice.auth("alice", "xyz123", "myrealm").frame.code == 200
        assert bob.auth("anyone", "xyz123", "myrealm").frame.code == 200
        tid = alice.send_message(bob, b"hi")
        assert alice.recv().frame.code == 200
        assert bob.recv().frame.tid == tid


def test_script_exception_answers_500_and_worker_survives(make_relay, tmp_path) -> None:
    script = tmp_path / "boom.py"
    script.write_text(
        "def ksr_msrp_event(msrp):\n"
        "    if msrp.method == 'SEND':\n"
        "        raise RuntimeError('boom')\n"
        "    msrp.reply('200', 'OK')\n"
    )
    relay: Relay = make_relay(children=1, msrp={"route": str(script)})
    assert relay.start().returncode == 0
    (worker,) = relay.worker_pids()
    with MsrpClient(relay.port) as client:
        tid = client.request("SEND", f"msrp://127.0.0.1:{relay.port}/s;tcp")
        reply = client.recv().frame
        assert (reply.tid, reply.code) == (tid, 500)
        # A response that makes the script fail is dropped; the next request still works.
        client.send_raw(
            b"MSRP r1 200 OK\r\nTo-Path: msrp://a:1/b;tcp\r\nFrom-Path: msrp://c:2/d;tcp\r\n-------r1$\r\n"
        )
        tid = client.request("AUTH", f"msrp://127.0.0.1:{relay.port};tcp")
        assert client.recv().frame.tid == tid
    assert relay.worker_pids() == {worker}
    assert f"route failed on frame {tid.decode()}" not in relay.log()  # the AUTH was fine
    assert "RuntimeError: boom" in relay.log()


def test_sip_on_the_msrp_port_gets_403(relay: Relay) -> None:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(
            b"OPTIONS sip:relay@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-1\r\n"
            b"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:relay@127.0.0.1>\r\n"
            b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        data = b""
        while not data.endswith(b"\r\n\r\n"):
            data += sock.recv(4096)
    assert data.startswith(b"SIP/2.0 403 No SIP Here\r\n")
    assert b"Call-ID: c1\r\n" in data and b"CSeq: 1 OPTIONS\r\n" in data
    assert b"To: <sip:relay@127.0.0.1>;tag=" in data


def test_relay_opens_a_connection_to_the_next_hop(relay: Relay) -> None:
    """1. A SEND with two hops after the relay goes out on a new outbound connection to the
    next one (To-Path #2), rewritten (RFC 4976 §6.2). 2. A response from that hop whose
    To-Path still names Alice after the relay is not written to Alice's connection: a
    client's connection is not found by address (issue 12); the relay already answered the
    SEND hop by hop (RFC 4976 §6.4.1), and the response is dropped and counted."""
    hop = socket.create_server(("127.0.0.1", 0))
    hop_uri = f"msrp://127.0.0.1:{hop.getsockname()[1]}/far;tcp"
    got: list[Frame] = []

    def next_hop() -> None:
        conn, _ = hop.accept()
        reader = FrameReader()
        while not got:
            reader.receive_data(conn.recv(65536))
            got.extend(e for e in reader.events() if isinstance(e, Frame))
        f = got[0]
        to = " ".join(f.from_path).encode()
        conn.sendall(
            b"MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n"
            % (f.tid, to, hop_uri.encode(), f.tid)
        )
        conn.recv(1)  # hold the connection until the relay closes it
        conn.close()

    thread = threading.Thread(target=next_hop, daemon=True)
    thread.start()
    with MsrpClient(relay.port) as alice:
        relay_uri = f"msrp://127.0.0.1:{relay.port}/hop;tcp"
        to_path = f"{relay_uri} {hop_uri} msrp://example.net:2855/end;tcp"
        headers = [("Message-ID", "n1"), ("Byte-Range", "1-2/2")]
        tid = alice.request("SEND", to_path, headers, b"hi")
        assert alice.recv().frame.code == 200  # the relay's hop-by-hop 200
        wait_for(lambda: got, 5, "the frame at the next hop")
        assert got[0].tid == tid and got[0].body == b"hi"
        assert got[0].to_path == [hop_uri, "msrp://example.net:2855/end;tcp"]
        assert got[0].from_path == [relay_uri, alice.uri]
        with pytest.raises(TimeoutError):
            alice.recv(1.0)  # the next hop's response does not come back by address
        shm = layout_for(relay.settings()).attach_all()
        try:
            wait_for(lambda: shm.stats.total()["responses_dropped"] == 1, 5, "the drop counted")
        finally:
            shm.close()
    hop.close()


def test_htable_route_relays_across_workers(make_relay) -> None:
    """The htable route: sessions live in the shared htable, relaying uses set_dst with the
    saved srcaddr, which the connection registry maps to the owning worker's connection."""
    route = Path(__file__).parents[2] / "etc" / "routes" / "htable.py"
    relay: Relay = make_relay(children=4, msrp={"route": str(route)})
    assert relay.start().returncode == 0
    pairs = []
    for _ in range(6):
        alice, bob = MsrpClient(relay.port), MsrpClient(relay.port)
        for client, user in ((alice, "alice"), (bob, "bob")):
            ok = client.auth(user, PASSWORDS[user], REALM, expires=1900)
            assert ok.frame.code == 200
            assert ok.frame.header("Expires") == b"1900"
        pairs.append((alice, bob))
    for alice, bob in pairs:
        tid = alice.send_message(bob, b"via htable")
        assert alice.recv().frame.code == 200
        got = bob.recv()
        assert got.frame.tid == tid and got.body == b"via htable"
        alice.close()
        bob.close()


def test_script_request_route_answers_sip(make_relay, tmp_path) -> None:
    script = tmp_path / "sip.py"
    script.write_text(
        "from msrpd.routing.routes.cmap import ksr_msrp_event  # noqa: F401\n\n"
        "def request_route(sip):\n"
        "    if sip.method == 'OPTIONS':\n"
        "        sip.reply(200, 'Alive')\n"
        "    else:\n"
        "        sip.reply(405, 'Method Not Allowed')\n"
    )
    relay: Relay = make_relay(children=1, msrp={"route": str(script)})
    assert relay.start().returncode == 0
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        for method, expect in ((b"OPTIONS", b"SIP/2.0 200 Alive"), (b"INVITE", b"SIP/2.0 405 ")):
            sock.sendall(
                method + b" sip:relay@127.0.0.1 SIP/2.0\r\n"
                b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-2\r\n"
                b"From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:r@127.0.0.1>\r\n"
                b"Call-ID: c2\r\nCSeq: 1 " + method + b"\r\nContent-Length: 0\r\n\r\n"
            )
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                data += sock.recv(4096)
            assert data.startswith(expect), data
