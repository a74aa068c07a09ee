"""WsServer (transports/wsconn.py), sans-IO: a wsproto client on the other side."""

from __future__ import annotations

from itertools import pairwise

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

from msrpd.workers.transports.wsconn import WsServer

SEND = b"MSRP a1 SEND\r\nTo-Path: msrp://r.invalid:1/s;ws\r\n\r\nhello\r\n-------a1$\r\n"
OK = b"MSRP a1 200 OK\r\nTo-Path: msrp://x.invalid:1/s;ws\r\n-------a1$\r\n"


class Pair:
    """A server and a connected wsproto client; `fed` is what the server handed the reader."""

    def __init__(self, max_message: int = 1 << 20, origins: tuple[str, ...] = ()) -> None:
        self.fed: list[bytes] = []
        self.server = WsServer(
            self.fed.append, origins, 8192, max_message, lambda tid, written: b"new1"
        )
        self.client = WSConnection(ConnectionType.CLIENT)

    def upgrade(self, **request: object) -> list[object]:
        fields = {"host": "relay", "target": "/", "subprotocols": ["msrp"]} | request
        out = self.server.receive(self.client.send(Request(**fields)))  # type: ignore[arg-type]
        return self.client_events(out)

    def client_events(self, data: bytes) -> list[object]:
        self.client.receive_data(data)
        return list(self.client.events())

    def send(self, *events: object) -> list[object]:
        data = b"".join(self.client.send(e) for e in events)  # type: ignore[arg-type]
        return self.client_events(self.server.receive(data))


def test_upgrade_accepts_msrp_and_feeds_messages() -> None:
    pair = Pair()
    (accepted,) = pair.upgrade()
    assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "msrp"
    assert pair.server.open
    pair.send(BytesMessage(data=SEND[:10], message_finished=False), BytesMessage(data=SEND[10:]))
    pair.send(TextMessage(data=OK.decode()))
    assert b"".join(pair.fed) == SEND + OK
    assert pair.fed[0] == SEND[:10]  # a fragment goes on as it arrives


@pytest.mark.parametrize(
    ("request_fields", "status"),
    [
        ({"subprotocols": [], "extra_headers": [(b"Origin", b"https://chat.example")]}, 400),
        (
            {
                "subprotocols": ["sip", "xmpp"],
                "extra_headers": [(b"Origin", b"https://chat.example")],
            },
            400,
        ),
        ({"extra_headers": [(b"Origin", b"https://evil.example")]}, 403),
        ({}, 403),  # no Origin while an allow-list is set
    ],
)
def test_upgrade_refusals(request_fields: dict[str, object], status: int) -> None:
    pair = Pair(origins=("https://chat.example",))
    (rejected, *_) = pair.upgrade(**request_fields)
    assert isinstance(rejected, RejectConnection) and rejected.status_code == status
    assert pair.server.closing and not pair.fed


def test_origin_allowed_case_insensitively() -> None:
    pair = Pair(origins=("https://chat.example",))
    (accepted,) = pair.upgrade(extra_headers=[(b"Origin", b"HTTPS://Chat.Example")])
    assert isinstance(accepted, AcceptConnection)


def test_upgrade_too_big_and_eof_before_request() -> None:
    big = WsServer(lambda _: None, (), 1024, 1 << 20, lambda tid, written: b"new1")
    assert big.receive(b"GET / HTTP/1.1\r\nX: " + b"x" * 1100).startswith(b"HTTP/1.1 431 ")
    assert big.closing
    fed: list[bytes] = []
    cut = WsServer(fed.append, (), 1024, 1 << 20, lambda tid, written: b"new1")
    assert cut.receive(b"GET / HTT") == b"" and not cut.closing
    assert cut.receive(b"") == b"" and cut.closing and fed == [b""]


def test_not_websocket_gets_426() -> None:
    server = WsServer(lambda _: None, (), 8192, 1 << 20, lambda tid, written: b"new1")
    out = server.receive(b"GET / HTTP/1.1\r\nHost: r\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426 ") and b"Upgrade: websocket\r\n" in out
    post = WsServer(lambda _: None, (), 8192, 1 << 20, lambda tid, written: b"new1")
    assert post.receive(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n").startswith(
        b"HTTP/1.1 405 "
    )


def test_message_over_cap_closes_1009_and_feeds_no_more() -> None:
    pair = Pair(max_message=100)
    pair.upgrade()
    pair.send(BytesMessage(data=b"x" * 60, message_finished=False))
    (close,) = pair.send(BytesMessage(data=b"y" * 60))
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert pair.fed == [b"x" * 60]
    assert pair.server.receive(b"more") == b""


def test_ping_pong_and_close_handshake() -> None:
    pair = Pair()
    pair.upgrade()
    (pong,) = pair.send(Ping(payload=b"p"))
    assert isinstance(pong, Pong) and pong.payload == b"p"
    (ping,) = pair.client_events(pair.server.ping())
    assert isinstance(ping, Ping)
    (close,) = pair.send(CloseConnection(code=1000))
    assert isinstance(close, CloseConnection) and close.code == 1000
    assert pair.server.closing and pair.server.encode(SEND) == b""


def test_bad_utf8_text_closes_1007() -> None:
    pair = Pair()
    pair.upgrade()
    # wsproto will not send bad UTF-8: a masked text frame by hand
    payload = b"MSRP \xff SEND"
    key = b"\x00\x00\x00\x00"
    (close,) = pair.client_events(
        pair.server.receive(bytes([0x81, 0x80 | len(payload)]) + key + payload)
    )
    assert isinstance(close, CloseConnection) and close.code == 1007


def test_each_frame_is_one_message_whatever_the_writes() -> None:
    pair = Pair()
    pair.upgrade()
    # two frames in one write, then one frame split across writes at every awkward point:
    # inside its end-line's dashes, inside its tid, before its flag, before its CRLF
    messages = pair.client_events(pair.server.encode(SEND + OK))
    streamed = SEND.replace(b"hello", b"h" * 5000)
    cuts = [0, 7, 100, len(streamed) - 12, len(streamed) - 5, len(streamed) - 3, len(streamed) - 1]
    cuts.append(len(streamed))
    out = b"".join(pair.server.encode(streamed[a:b]) for a, b in pairwise(cuts))
    messages += pair.client_events(out)
    whole = []
    data = b""
    for event in messages:
        assert isinstance(event, BytesMessage)
        data += event.data
        if event.message_finished:
            whole.append(data)
            data = b""
    assert whole == [SEND, OK, streamed]


def test_body_that_looks_like_an_end_line_is_not_one() -> None:
    pair = Pair()
    pair.upgrade()
    tricky = b"MSRP a1 SEND\r\n\r\nx\r\n-------a1X\r\n-------a2$\r\ny\r\n-------a1+\r\n"
    out = pair.client_events(pair.server.encode(tricky[:20]) + pair.server.encode(tricky[20:]))
    assert b"".join(e.data for e in out) == tricky  # type: ignore[attr-defined]
    assert [e.message_finished for e in out][-1]  # type: ignore[attr-defined]
    assert sum(e.message_finished for e in out) == 1  # type: ignore[attr-defined]


def test_text_client_gets_text_unless_binary_body() -> None:
    pair = Pair()
    pair.upgrade()
    pair.send(TextMessage(data=OK.decode()))
    (text,) = pair.client_events(pair.server.encode(SEND))
    assert isinstance(text, TextMessage) and text.data == SEND.decode()
    binary_body = SEND.replace(b"hello", b"\xff\xfe")
    (binary,) = pair.client_events(pair.server.encode(binary_body))
    assert isinstance(binary, BytesMessage) and binary.data == binary_body
