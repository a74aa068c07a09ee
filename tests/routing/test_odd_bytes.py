"""Odd bytes cannot make the route API raise (issue 12 item 8).

The reader refuses a frame whose To-Path or From-Path does not parse (tests/protocol/
test_paths.py), so whatever reaches a route has paths that parse; every other header value may
hold any byte but CTLs (RFC 4975 §9 utf8text, not validated as UTF-8). Here frames with
non-UTF-8 bytes everywhere else, and paths in every legal but unusual shape, go through both
bundled routes and through every read the script API offers: hdr() of each header, the 21
pv keys, msrpuri() of each path key (which must parse) and of each header value (a parse
error is the documented LocalProtocolError, nothing else).
"""

from __future__ import annotations

import pytest

from msrpd.protocol import (
    MSRP_PV_KEYS,
    Frame,
    FrameReader,
    InvalidFrame,
    LocalProtocolError,
    MsrpUri,
)
from msrpd.routing import Msrp

from .fakeenv import RELAY, Client, FakeEnv, Relay, parse

ALICE = Client("alice", 40001, conid=0x1001)
ODD = b"\xf4\xff(\xc3\x80\xed\xa0\x80"  # invalid UTF-8, an overlong-ish pair, a surrogate
PATH_KEYS = ("crthop", "nexthop", "lasthop", "prevhop", "firsthop")

UNUSUAL_TO = (
    b"msrp://127.0.0.1:2855/s;tcp MSRPS://u:p@[2001:db8::1]:0009/a+b=/c;TCP;x=y=z;k "
    b"msrp://a%41.example/z;ws"
)


def _frame(method: bytes, to_path: bytes, extra: bytes, body: bytes | None) -> bytes:
    head = b"MSRP odd1 %s\r\nTo-Path: %s\r\nFrom-Path: %s\r\n%s" % (
        method,
        to_path,
        ALICE.uri.encode(),
        extra,
    )
    if body is None:
        return head + b"-------odd1$\r\n"
    return head + b"Content-Type: text/pl" + ODD + b"\r\n\r\n" + body + b"\r\n-------odd1$\r\n"


FRAMES = {
    "AUTH, odd Authorization": _frame(
        b"AUTH",
        RELAY.encode(),
        b'Authorization: Digest username="b' + ODD + b'", realm="myrealm", nonce="'
        b'abc", uri="' + ODD + b'", response="0", qop=auth, nc=0' + ODD + b"\r\n",
        None,
    ),
    "AUTH, odd Expires": _frame(b"AUTH", RELAY.encode(), b"Expires: 1" + ODD + b"\r\n", None),
    "SEND, odd headers and body": _frame(
        b"SEND",
        b"msrp://127.0.0.1:2855/s;tcp msrp://b:2/x;tcp",
        b"Message-ID: m" + ODD + b"\r\nByte-Range: 1-" + ODD + b"/*\r\nX-Odd: " + ODD + b"\r\n"
        b"Failure-Report: " + ODD + b"\r\n",
        ODD * 100,
    ),
    "SEND to a session, unusual paths": _frame(
        b"SEND", UNUSUAL_TO, b"Message-ID: " + ODD + b"\r\n", ODD
    ),
    "SEND to one session": _frame(b"SEND", b"msrp://127.0.0.1:2855/s;tcp", b"", ODD),
    "REPORT, odd Status": _frame(
        b"REPORT", UNUSUAL_TO, b"Message-ID: m\r\nStatus: 000 2" + ODD + b"\r\n", None
    ),
    "unknown method": _frame(b"FOO", RELAY.encode(), b"X: " + ODD + b"\r\n", None),
    "response, odd reason": (
        b"MSRP odd1 200 O"
        + ODD
        + b"\r\nTo-Path: "
        + UNUSUAL_TO
        + b"\r\nFrom-Path: msrp://b:2/x;tcp"
        b"\r\nMessage-ID: " + ODD + b"\r\n-------odd1$\r\n"
    ),
}


def _header_names(frame_bytes: bytes) -> list[str]:
    return [name.decode("utf-8", "surrogateescape") for name, _ in parse(frame_bytes).headers()]


# The frame: before the fix it reached the API, and reading its paths raised.
BAD_PATH = _frame(
    b"AUTH", b"msrp://127.0.0.1:2855;\xf4cp", b'Authorization: Digest response="0"\r\n', None
)


@pytest.mark.parametrize("raw", [*FRAMES.values(), BAD_PATH], ids=[*FRAMES, "bad To-Path"])
def test_every_read_of_the_api_answers(raw: bytes, env: FakeEnv) -> None:
    reader = FrameReader()
    reader.receive_data(raw)
    (event,) = reader.events()
    if raw is BAD_PATH:
        assert isinstance(event, InvalidFrame)  # refused: it never reaches a route
        return
    assert isinstance(event, Frame)
    msrp = Msrp(event, ALICE.conn, env)
    for key in MSRP_PV_KEYS:
        msrp.pv(key)
    for key in PATH_KEYS:
        value = msrp.pv(key)
        if value is not None:
            assert isinstance(value, str)
            assert isinstance(msrp.msrpuri(value), MsrpUri)
    for name in _header_names(raw):
        value = msrp.hdr(name)
        assert isinstance(value, str)
        try:
            uri = msrp.msrpuri(value)
        except LocalProtocolError:
            continue
        assert isinstance(uri, MsrpUri)


@pytest.mark.usefixtures("both_loaders")  # compiled and exec'd alike
@pytest.mark.parametrize("route", ["cmap", "htable"])
@pytest.mark.parametrize("raw", FRAMES.values(), ids=list(FRAMES))
def test_bundled_routes_answer_odd_frames(route: str, raw: bytes, env: FakeEnv) -> None:
    frame = parse(raw)
    replies, relayed = Relay(route, env).feed(ALICE, raw)  # raises if the script does
    if frame.method in (None, b"REPORT"):
        assert replies == []  # RFC 4975 §7.1.2, §7.2: never answered
    else:
        assert len(replies) == 1, (replies, relayed)
        assert replies[0].tid == b"odd1"
        assert replies[0].code in (200, 400, 401, 481, 501), replies[0].buf
