"""WebSocket clients (RFC 7977) against a live msrpd: the handshake, AUTH over ws and wss,
chat with TCP clients both ways, big messages, and bad input.

The WebSocket side is the `websockets` library (wsclient.py); bad frames it would never send
go over raw sockets."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ..integration.relay import PASSWORDS, REALM, Relay, free_port, running, wait_for
from ..msrpclient import MsrpClient, Received
from .wsclient import WsMsrpClient

RELAY_ROUTE = {"route": None}  # msrpd's default route: the RFC 4976 relay


def started(make_relay, **kwargs) -> Relay:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, **kwargs)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    return relay


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    """One relay with a ws: listener on the defaults for the tests that only open connections
    of their own and close them (none kills, reloads or stops it, or fills a limit)."""
    with running(children=2, websocket={}) as shared:
        yield shared


def authed(client: MsrpClient, user: str) -> MsrpClient:
    final = client.auth(user, PASSWORDS[user], REALM)
    assert final.frame.code == 200, final.frame.buf
    return client


def exchange(alice: MsrpClient, bob: MsrpClient, body: bytes) -> None:
    """Alice sends `body` to Bob through the relay: Alice gets 200, Bob gets the body, once
    (nothing else waits on either side afterwards: each recv takes the next frame)."""
    tid = alice.send_message(bob, body)
    ok = alice.recv()
    assert (ok.frame.tid, ok.frame.code) == (tid, 200), ok.frame.buf
    got = bob.recv()
    # The default route forwards under a new transaction id (t_relay); the cmap route keeps it.
    assert got.frame.method == b"SEND" and got.frame.header("Message-ID") == b"m1"
    assert got.body == body
    assert got.frame.to_path == [bob.uri]
    assert got.frame.from_path[1:] == [alice.uri]


def tls_files(tmp_path) -> tuple[dict[str, object], ssl.SSLContext]:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return {"certificate": str(cert_file), "private_key": str(key_file)}, ctx


def raw_upgrade(port: int, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """Send an upgrade request with `headers` over a raw socket: (the socket, the response
    head)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = ["GET / HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return sock, head


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Protocol": "msrp",
}


def closed_by_relay(sock: socket.socket) -> bytes:
    """Everything the relay writes until it closes the socket."""
    data = b""
    while True:
        more = sock.recv(65536)
        if not more:
            return data
        data += more


# -- the handshake ----------------------------------------------------------------------------


def test_handshake_needs_msrp_subprotocol(relay: Relay) -> None:
    with connect(f"ws://127.0.0.1:{relay.ws_port}/", subprotocols=["msrp"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "msrp"
    for offered in (None, ["sip"]):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{relay.ws_port}/", subprotocols=offered)  # type: ignore[arg-type]
        assert refused.value.response.status_code == 400


@pytest.mark.parametrize(
    ("drop", "replace", "status"),
    [
        ("Upgrade", {}, 426),
        ("Connection", {}, 426),
        (None, {"Sec-WebSocket-Version": "8"}, 426),
        ("Sec-WebSocket-Key", {}, 400),
    ],
)
def test_bad_upgrade_gets_http_error_and_close(relay: Relay, drop, replace, status) -> None:
    headers = {k: v for k, v in UPGRADE.items() if k != drop} | replace
    sock, head = raw_upgrade(relay.ws_port, headers)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert closed_by_relay(sock) == b""
    sock.close()


def test_origin_allow_list(make_relay) -> None:
    relay = started(make_relay, websocket={"origins": ["https://chat.example.com"]})
    url = f"ws://127.0.0.1:{relay.ws_port}/"
    with connect(url, subprotocols=["msrp"], origin="https://Chat.example.com") as ws:  # type: ignore[list-item, arg-type]
        assert ws.subprotocol == "msrp"
    for origin in ("https://evil.example.com", None):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, subprotocols=["msrp"], origin=origin)  # type: ignore[list-item, arg-type]
        assert refused.value.response.status_code == 403


def test_upgrade_size_and_time_caps(make_relay) -> None:
    relay = started(make_relay, websocket={"max_upgrade_bytes": 1024, "upgrade_timeout": 1})
    sock, head = raw_upgrade(relay.ws_port, UPGRADE | {"X-Pad": "x" * 2000})
    assert head.startswith(b"HTTP/1.1 431 "), head
    sock.close()
    slow = socket.create_connection(("127.0.0.1", relay.ws_port), timeout=10)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    began = time.monotonic()
    assert closed_by_relay(slow) == b""
    assert 0.9 <= time.monotonic() - began < 5
    slow.close()


# -- AUTH and chat ----------------------------------------------------------------------------


def test_auth_over_ws_and_chat_with_tcp_both_ways(make_relay) -> None:
    metrics = free_port()
    relay: Relay = make_relay(children=2, websocket={})
    relay.sections["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
    relay.write_config()
    assert relay.start().returncode == 0, relay.log()
    with (
        authed(WsMsrpClient(relay.ws_port), "alice") as alice,
        authed(MsrpClient(relay.port), "bob") as bob,
    ):
        assert alice.use_path.startswith(f"msrp://127.0.0.1:{relay.ws_port}/")
        assert alice.use_path.endswith(";ws")
        for i in range(3):
            exchange(alice, bob, b"ws to tcp %d" % i)
            exchange(bob, alice, b"tcp to ws %d" % i)
        assert {kind for kind, _ in alice.messages} == {"binary"}
        # msrp.conns shows each connection's transport
        conns = relay.cli("ctl", "--json", "msrp.conns")
        assert conns.returncode == 0, conns.stderr
        rows = json.loads(conns.stdout)
        by_local = sorted((row["local"], row["transport"]) for row in rows)
        assert by_local == [
            (f"tcp:127.0.0.1:{relay.port}", "tcp"),
            (f"ws:127.0.0.1:{relay.ws_port}", "ws"),
        ]

    # counted per transport in stats.get and Prometheus (published once a second)
    def stats() -> dict[str, int]:
        out = relay.cli("ctl", "--json", "stats.get", "conns_")
        assert out.returncode == 0, out.stderr
        return {k: int(v) for k, v in json.loads(out.stdout)["total"].items()}

    wait_for(lambda: stats()["conns_total"] >= 2, 5, "published")
    assert (stats()["conns_ws"], stats()["conns_wss"], stats()["conns_total"]) == (1, 0, 2)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert _ws_samples(text) == {"ws": 1.0, "wss": 0.0}


def _ws_samples(text: str) -> dict[str, float]:
    """msrpd_websocket_connections_total per transport, summed over the workers."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "msrpd_websocket_connections_total":
                transport = sample.labels["transport"]
                found[transport] = found.get(transport, 0.0) + sample.value
    return found


def test_text_messages_are_answered_in_text(relay: Relay) -> None:
    with (
        authed(WsMsrpClient(relay.ws_port, text=True), "alice") as alice,
        authed(MsrpClient(relay.port), "bob") as bob,
    ):
        exchange(bob, alice, "héllo".encode())
        exchange(alice, bob, b"plain")
        assert {kind for kind, _ in alice.messages} == {"text"}


def test_wss_auth_default_relay_route(make_relay, tmp_path) -> None:
    tls, ctx = tls_files(tmp_path)
    relay = started(make_relay, tls=tls, msrp=RELAY_ROUTE, websocket={})
    with authed(WsMsrpClient(relay.wss_port, tls=ctx), "alice") as alice:
        assert alice.use_path.startswith(f"msrps://127.0.0.1:{relay.wss_port}/")
        assert alice.use_path.endswith(";ws")
        with authed(MsrpClient(relay.tls_port, tls=ctx), "bob") as bob:
            exchange(alice, bob, b"wss to tls")
            exchange(bob, alice, b"tls to wss")
    # Plain ws: AUTH is refused as over plain TCP (RFC 4976 §9.2).
    with WsMsrpClient(relay.ws_port) as plain:
        plain.request("AUTH", plain.relay_uri)
        assert plain.recv().frame.code == 403


def test_relay_never_dials_a_ws_uri(make_relay, tmp_path) -> None:
    tls, ctx = tls_files(tmp_path)
    relay = started(make_relay, tls=tls, msrp=RELAY_ROUTE, websocket={})
    with authed(MsrpClient(relay.tls_port, tls=ctx), "bob") as bob:
        # An outbound SEND to a ;ws URI nobody is connected by: never dialled (RFC 7977 §6).
        target = "msrps://127.0.0.1:1/x;ws"
        tid = bob.request("SEND", f"{bob.use_path} {target}", [("Message-ID", "m")], b"x")
        ok, report = bob.recv(), bob.recv()
        assert (ok.frame.tid, ok.frame.code) == (tid, 200)
        assert report.frame.method == b"REPORT", report.frame.buf
        assert (report.frame.header("Status") or b"").startswith(b"000 408 ")
    assert "a WebSocket URI is never dialled" in relay.log()


# -- big messages -----------------------------------------------------------------------------


def test_64_mib_tcp_to_ws_and_back(make_relay) -> None:
    size = 64 << 20
    relay = started(make_relay, websocket={"max_message": size + 4096}, msrp={"max_body": 1 << 20})
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    with (
        authed(WsMsrpClient(relay.ws_port, timeout=120), "alice") as alice,
        authed(MsrpClient(relay.port, timeout=120), "bob") as bob,
    ):
        tid, frame = bob.binary_send(alice, body, "big1")
        bob.send_raw(frame)
        before = len(alice.messages)
        got = alice.recv(timeout=120)
        assert got.frame.tid == tid
        assert hashlib.sha256(got.body).hexdigest() == digest
        # One message, fragmented by the relay (RFC 7977 §5.1), holding the one frame.
        assert len(alice.messages) == before + 1
        kind, length = alice.messages[-1]
        assert kind == "binary" and size < length < size + 1024
        assert bob.recv(timeout=120).frame.code == 200
        tid, frame = alice.binary_send(bob, body, "big2")
        with _sending(alice, [frame]):  # Bob reads while Alice writes
            back = bob.recv(timeout=120)
        assert alice.recv(timeout=120).frame.code == 200
        assert back.frame.tid == tid
        assert hashlib.sha256(back.body).hexdigest() == digest


@contextlib.contextmanager
def _sending(sender: WsMsrpClient, frames: list[bytes]) -> Iterator[None]:
    """`frames` written by `sender` in a thread while the block reads, as a real client
    reads and writes at once: the relay holds what a receiver has not read only up to its
    flow-control bounds (RFC 4975 §5.4), so a writer that blocks until the receiver reads,
    while nobody reads, would wait for ever."""
    failed: list[BaseException] = []

    def send() -> None:
        try:
            for frame in frames:
                sender.send_raw(frame)
        except BaseException as exc:  # reported by the test's thread
            failed.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    yield
    thread.join(120)
    assert not thread.is_alive() and not failed, failed


def chunks_of(sender: MsrpClient, to: MsrpClient, body: bytes, size: int) -> list[bytes]:
    """`body` as SEND chunks of at most `size` body bytes (RFC 4975 §7.1.1: one Message-ID,
    contiguous Byte-Ranges, `+` on all but the last)."""
    frames = []
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        last = start + size >= len(body)
        _, frame = sender.binary_send(to, piece, "chunked")
        frame = frame.replace(
            b"Byte-Range: 1-%d/%d" % (len(piece), len(piece)),
            b"Byte-Range: %d-%d/%d" % (start + 1, len(body), len(body)),
        )
        frames.append(frame if last else frame[:-3] + b"+\r\n")
    return frames


def reassembled(received: list[Received], total: int) -> bytes:
    """The body of the chunks `received` (one Message-ID, contiguous ranges, `+` then `$`)."""
    body = bytearray()
    for got in received:
        assert got.frame.header("Message-ID") == received[0].frame.header("Message-ID")
        first, _, whole = (got.frame.header("Byte-Range") or b"").partition(b"-")
        assert int(first) == len(body) + 1 and whole.endswith(b"/%d" % total)
        body += got.body
    return bytes(body)


def test_64_mib_rechunked_for_the_default_message_limit(make_relay) -> None:
    """RFC 7977 §5.1: a 64 MiB SEND from TCP reaches the WebSocket client as chunks that each
    fit [websocket] max_message (16 MiB); the client sends it back in such chunks."""
    size, limit = 64 << 20, 16 << 20
    relay = started(make_relay, websocket={}, msrp={"max_body": 1 << 20})
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    with (
        authed(WsMsrpClient(relay.ws_port, timeout=120), "alice") as alice,
        authed(MsrpClient(relay.port, timeout=120), "bob") as bob,
    ):
        tid, frame = bob.binary_send(alice, body, "big1")
        bob.send_raw(frame)
        before = len(alice.messages)
        received = [alice.recv(timeout=120)]
        while len(b"".join(r.body for r in received)) < size:
            received.append(alice.recv(timeout=120))
        assert received[0].frame.tid == tid and len(received) == 5
        assert len({r.frame.tid for r in received}) == 5  # a new transaction per chunk
        assert all(length <= limit for _, length in alice.messages[before:])
        assert hashlib.sha256(reassembled(received, size)).hexdigest() == digest
        assert bob.recv(timeout=120).frame.code == 200
        back = []
        with _sending(alice, chunks_of(alice, bob, body, limit - 4096)):
            while len(b"".join(r.body for r in back)) < size:
                got = bob.recv(timeout=120)
                if got.frame.method == b"SEND":
                    back.append(got)
        assert hashlib.sha256(reassembled(back, size)).hexdigest() == digest
        assert [alice.recv(timeout=120).frame.code for _ in back] == [200] * len(back)


def test_fragmented_message_is_read_as_it_comes(relay: Relay) -> None:
    with (
        authed(WsMsrpClient(relay.ws_port), "alice") as alice,
        authed(MsrpClient(relay.port), "bob") as bob,
    ):
        body = os.urandom(300_000)
        tid, frame = alice.binary_send(bob, body, "frag")
        alice.ws.send([frame[i : i + 7000] for i in range(0, len(frame), 7000)])
        assert alice.recv().frame.code == 200
        got = bob.recv()
        assert (got.frame.tid, got.body) == (tid, body)


def test_oversized_message_closes_1009(make_relay) -> None:
    relay = started(make_relay, websocket={"max_message": 4096})
    with (
        authed(WsMsrpClient(relay.ws_port), "alice") as alice,
        authed(MsrpClient(relay.port), "bob") as bob,
    ):
        _, frame = alice.binary_send(bob, os.urandom(8192), "big")
        alice.ws.send(frame)
        with pytest.raises(EOFError):
            alice.recv()
        assert alice.ws.close_code == 1009
        # The chunk was never whole (under max_body, so not streamed): Bob gets nothing.
        with pytest.raises(TimeoutError):
            bob.recv(timeout=1)


# -- bad frames (raw sockets) -----------------------------------------------------------------


def raw_ws(port: int) -> socket.socket:
    sock, head = raw_upgrade(port, UPGRADE)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"sec-websocket-protocol: msrp" in head.lower()
    return sock


def ws_frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    length = bytes([n | bit]) if n < 126 else bytes([126 | bit]) + struct.pack("!H", n)
    if not mask:
        return bytes([first]) + length + payload
    key = b"\x01\x02\x03\x04"
    return bytes([first]) + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code(data: bytes) -> int:
    """The status code of the close frame the relay sent (an unmasked server frame)."""
    assert data[0] == 0x88, data
    return struct.unpack("!H", data[2:4])[0]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (ws_frame(2, b"MSRP x SEND\r\n", mask=False), 1002),  # unmasked client frame
        (ws_frame(3, b"x"), 1002),  # a reserved opcode
        (ws_frame(1, b"MSRP \xff\xfe SEND\r\n"), 1007),  # bad UTF-8 in a text message
    ],
)
def test_bad_frames_close_with_code(relay: Relay, frame, code) -> None:
    sock = raw_ws(relay.ws_port)
    sock.sendall(frame)
    assert close_code(closed_by_relay(sock)) == code
    sock.close()


def test_ping_answered_and_close_handshake(relay: Relay) -> None:
    sock = raw_ws(relay.ws_port)
    sock.sendall(ws_frame(9, b"hi"))
    assert sock.recv(100) == b"\x8a\x02hi"  # the pong carries the ping's payload
    sock.sendall(ws_frame(8, struct.pack("!H", 1000)))
    assert close_code(closed_by_relay(sock)) == 1000
    sock.close()


def test_client_closing_mid_message_ends_chunk_with_hash(make_relay) -> None:
    relay = started(make_relay, websocket={}, msrp={"max_body": 1024})
    with (
        authed(WsMsrpClient(relay.ws_port), "alice") as alice,
        authed(MsrpClient(relay.port), "bob") as bob,
    ):
        body = os.urandom(100_000)
        tid, frame = alice.binary_send(bob, body, "cut")
        half = frame[:50_000]
        alice.ws.socket.sendall(ws_frame(2, half, fin=False))  # a first fragment only
        alice.ws.socket.close()
        # Bob gets what was sent, then the end-line with "#" (RFC 4975 §7.1).
        end = b"\r\n-------" + tid + b"#\r\n"
        data = b""
        bob.sock.settimeout(10)
        while not data.endswith(end):
            more = bob.sock.recv(65536)
            assert more, data[-200:]
            data += more
        head_end = data.index(b"\r\n\r\n") + 4
        assert data.startswith(b"MSRP " + tid + b" SEND\r\n")
        got, sent = data[head_end : -len(end)], half[half.index(b"\r\n\r\n") + 4 :]
        # The reader may keep back the last bytes of what was read (they might have begun
        # an end-line): what Bob gets is what Alice sent, up to those.
        assert sent.startswith(got) and len(sent) - len(got) < 100, (len(sent), len(got))


def test_quiet_connection_is_pinged(make_relay) -> None:
    relay = started(make_relay, websocket={"ping_interval": 1})
    sock = raw_ws(relay.ws_port)
    began = time.monotonic()
    sock.settimeout(5)
    assert sock.recv(2) == b"\x89\x00"  # a Ping with no payload (RFC 7977 §6)
    assert 0.9 <= time.monotonic() - began < 4
    sock.close()
