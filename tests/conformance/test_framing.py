"""Framing and grammar through the relay route (rfc-checklist §6 cases 1-8, 28, 30b).

A is a TLS client with a token TA, B a listening peer the relay dials (`To-Path: TA b`:
outbound). What B receives is checked frame by frame; the transaction id a forwarded frame
carries is the transaction layer's business (test_transactions.py), so it is not compared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psutil
import pytest

from msrpd.protocol import Frame
from msrpd.protocol.writer import build_request

from ..msrpclient import MsrpClient, new_tid
from .conftest import Net
from .peer import Peer
from .util import answer_of, closed, nothing_more, send


@pytest.fixture
def pair(net: Net) -> Iterator[tuple[MsrpClient, Peer]]:
    a, b = net.authed(), Peer()
    yield a, b
    a.close()
    b.close()


def _send_frame(a: MsrpClient, b: Peer, body: bytes | None, mid: str, **kw: object) -> bytes:
    tid = new_tid()
    headers = [("Message-ID", mid)]
    if body is not None:
        headers += [("Byte-Range", f"1-{len(body)}/{len(body)}"), ("Content-Type", "text/plain")]
    return build_request(tid, b"SEND", [a.use_path or "", b.uri], [a.uri], headers, body)


def _view(frame: Frame, body: bytes) -> tuple[object, ...]:
    """What B must see of a forwarded SEND, without its transaction id."""
    return (frame.method, frame.to_path, frame.from_path, bytes(frame.hdrs or b""), body)


def test_case1_two_sends_in_one_segment_and_byte_by_byte(
    pair: tuple[MsrpClient, Peer],
) -> None:
    """Case 1: two SENDs in one write, then the same two one byte per write: B gets both,
    in order, identical both times; A gets a 200 for each."""
    a, b = pair
    runs = []
    for split in (False, True):
        frames = [_send_frame(a, b, f"body {i}".encode(), f"m{i}") for i in range(2)]
        data = b"".join(frames)
        if split:
            for i in range(len(data)):
                a.send_raw(data[i : i + 1])
        else:
            a.send_raw(data)
        tids = [f.split(b" ", 2)[1] for f in frames]
        assert [answer_of(a, t).frame.code for t in tids] == [200, 200]
        got = [b.recv() for _ in frames]
        runs.append([_view(g.frame, g.body) for g in got])
        assert [g.body for g in got] == [b"body 0", b"body 1"]
    assert runs[0] == runs[1]
    nothing_more(a, b.accept())


def test_case2_end_line_lookalikes_stay_in_the_body(pair: tuple[MsrpClient, Peer]) -> None:
    """Case 2: a body holding another id's end-line and this id's dashes with no valid flag
    reaches B byte for byte."""
    a, b = pair
    tid = new_tid()
    body = b"a\r\n-------zzzz$\r\nb -------" + tid + b"X\r\n-------" + tid + b"\r\nc"
    head = (
        f"MSRP {tid.decode()} SEND\r\nTo-Path: {a.use_path} {b.uri}\r\nFrom-Path: {a.uri}\r\n"
        f"Message-ID: m2\r\nByte-Range: 1-{len(body)}/{len(body)}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    a.send_raw(head.encode() + body + b"\r\n-------" + tid + b"$\r\n")
    assert answer_of(a, tid).frame.code == 200
    assert b.recv().body == body


def test_case3_a_bodiless_send_stays_bodiless(pair: tuple[MsrpClient, Peer]) -> None:
    """Case 3: no Content-Type, end-line right after the headers: 200 to A, and B's copy is
    bodiless too."""
    a, b = pair
    tid = send(a, f"{a.use_path} {b.uri}", None, mid="keepalive")
    assert answer_of(a, tid).frame.code == 200
    got = b.recv()
    assert got.frame.header("Content-Type") is None
    assert got.frame.body is None
    assert bytes(got.frame.buf).endswith(
        b"Message-ID: keepalive\r\n-------" + got.frame.tid + b"$\r\n"
    )


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("case4 From-Path first", "From-Path: {a}\r\nTo-Path: {ta} {b}\r\n"),
        (
            "case4 a header before To-Path",
            "Message-ID: x\r\nTo-Path: {ta} {b}\r\nFrom-Path: {a}\r\n",
        ),
        ("case5 folded header", "To-Path: {ta} {b}\r\nFrom-Path: {a}\r\nX-Long: one\r\n two\r\n"),
        ("case5 bare LF", "To-Path: {ta} {b}\r\nFrom-Path: {a}\nMessage-ID: x\r\n"),
    ],
)
def test_case4_5_malformed_heads_get_400_and_go_nowhere(
    pair: tuple[MsrpClient, Peer], name: str, head: str
) -> None:
    """Cases 4 and 5: paths out of order, a folded line, a bare LF: 400 (policy), nothing
    forwarded, the connection stays usable."""
    a, b = pair
    tid = new_tid()
    text = head.format(a=a.uri, ta=a.use_path, b=b.uri)
    a.send_raw(b"MSRP %s SEND\r\n%s-------%s$\r\n" % (tid, text.encode(), tid))
    got = answer_of(a, tid)
    assert got.frame.code == 400, name
    assert not b.connected()
    tid = send(a, f"{a.use_path} {b.uri}", b"after")
    assert answer_of(a, tid).frame.code == 200
    assert b.recv().body == b"after"


@pytest.mark.parametrize("tid", [b"ab1", b"a" * 33])
def test_case6_transaction_ids_outside_4_to_32_get_400(
    pair: tuple[MsrpClient, Peer], tid: bytes
) -> None:
    """Case 6: `ident` is 4 to 32 characters: a 3- and a 33-character id get 400 (the reader
    takes them; the relay route refuses them) and are not forwarded."""
    a, b = pair
    send(a, f"{a.use_path} {b.uri}", b"x", tid=tid)
    assert answer_of(a, tid).frame.code == 400
    assert not b.connected()


def test_case6_an_id_with_a_bad_character_closes(pair: tuple[MsrpClient, Peer]) -> None:
    """Case 6: `a_bc` is no ident at all: the end-line cannot be trusted, so the reader
    closes the connection (checklist §2.1 step 1); nothing is forwarded."""
    a, b = pair
    a.send_raw(
        b"MSRP a_bc SEND\r\nTo-Path: %s %s\r\nFrom-Path: %s\r\n-------a_bc$\r\n"
        % (a.use_path.encode(), b.uri.encode(), a.uri.encode())  # type: ignore[union-attr]
    )
    assert closed(a)
    assert not b.connected()


def test_case6_control_id_is_accepted(pair: tuple[MsrpClient, Peer]) -> None:
    a, b = pair
    send(a, f"{a.use_path} {b.uri}", b"x", tid=b"a+%=")
    assert answer_of(a, b"a+%=").frame.code == 200
    assert b.recv().body == b"x"


def test_case7_unknown_headers_are_forwarded_in_place(pair: tuple[MsrpClient, Peer]) -> None:
    a, b = pair
    headers = [("Message-ID", "m7"), ("X-Foo", "bar"), ("Byte-Range", "1-2/2")]
    headers.append(("Content-Type", "text/plain"))
    tid = a.request("SEND", f"{a.use_path} {b.uri}", headers, b"hi")
    assert answer_of(a, tid).frame.code == 200
    got = b.recv()
    lines = bytes(got.frame.hdrs or b"").split(b"\r\n")
    assert lines[lines.index(b"Message-ID: m7") :][:4] == [
        b"Message-ID: m7",
        b"X-Foo: bar",
        b"Byte-Range: 1-2/2",
        b"Content-Type: text/plain",
    ]


def test_case8a_header_names_in_any_case_are_accepted(pair: tuple[MsrpClient, Peer]) -> None:
    """Case 8(a): `to-path:` and friends are read case-insensitively, relayed, and written in
    canonical case (rfc-checklist §1.6), the 200 to A too; an extension header keeps its
    spelling; every value and the body are unchanged."""
    a, b = pair
    tid = new_tid()
    head = b"to-path: %s %s\r\nFROM-PATH: %s\r\nmessage-ID: m8\r\nx-Foo: Bar\r\n" % (
        (a.use_path or "").encode(),
        b.uri.encode(),
        a.uri.encode(),
    )
    head += b"byte-range: 1-2/2\r\nCONTENT-type: text/plain\r\n"
    a.send_raw(b"MSRP %s SEND\r\n%s\r\nhi\r\n-------%s$\r\n" % (tid, head, tid))
    ok = answer_of(a, tid).frame
    assert ok.code == 200 and ok.header_line("Message-ID") == b"Message-ID: m8\r\n"
    got = b.recv()
    new = got.frame.tid
    assert got.frame.buf == (
        b"MSRP %s SEND\r\nTo-Path: %s\r\nFrom-Path: %s %s\r\nMessage-ID: m8\r\n"
        b"x-Foo: Bar\r\nByte-Range: 1-2/2\r\nContent-Type: text/plain\r\n\r\nhi\r\n-------%s$\r\n"
        % (new, b.uri.encode(), (a.use_path or "").encode(), a.uri.encode(), new)
    )
    nothing_more(a, b.accept())


def test_case8b_a_lower_case_method_gets_400(pair: tuple[MsrpClient, Peer]) -> None:
    a, b = pair
    tid = send(a, f"{a.use_path} {b.uri}", b"x", method="send")
    assert answer_of(a, tid).frame.code == 400
    assert not b.connected()


def test_case8c_scheme_and_host_case_do_not_matter(pair: tuple[MsrpClient, Peer]) -> None:
    a, b = pair
    assert a.use_path and a.use_path.startswith("msrps://relay.example.net:")
    shouting = "MSRPS://RELAY.EXAMPLE.NET" + a.use_path.removeprefix("msrps://relay.example.net")
    tid = send(a, f"{shouting} {b.uri}", b"loud")
    assert answer_of(a, tid).frame.code == 200
    got = b.recv()
    assert got.body == b"loud" and got.frame.from_path == [shouting, a.uri]


def test_case8d_the_session_id_is_case_sensitive(pair: tuple[MsrpClient, Peer]) -> None:
    a, b = pair
    assert a.use_path
    head, sid = a.use_path.rsplit("/", 1)
    token = f"{head}/{sid.split(';')[0].swapcase()};tcp"
    tid = send(a, f"{token} {b.uri}", b"x")
    assert answer_of(a, tid).frame.code == 481
    assert not b.connected()


def test_case28_five_mib_are_streamed_through_intact(net: Net) -> None:
    """Case 28: one 5 MiB SEND (`Byte-Range: 1-*/5242880`) is streamed (max_body is 1 MiB):
    B gets the identical bytes in order under one Message-ID, the last chunk ending `$`,
    every chunk over 2048 bytes with range-end `*`; the workers do not hold the message."""
    size = 5 * 1024 * 1024
    body = bytes(range(251)) * (size // 251) + b"z" * (size % 251)
    with net.authed() as a, Peer() as b:
        workers = net.relay.workers()
        before = sum(w.memory_info().rss for w in workers)
        tid = new_tid()
        headers = [("Message-ID", "big"), ("Byte-Range", f"1-*/{size}")]
        headers.append(("Content-Type", "application/octet-stream"))
        a.send_raw(build_request(tid, b"SEND", [a.use_path or "", b.uri], [a.uri], headers, body))
        received, start = bytearray(), 1
        while len(received) < size:
            got = b.recv(timeout=30)
            assert got.frame.message_id == b"big"
            first, rest = (got.frame.header("Byte-Range") or b"").split(b"-", 1)
            assert int(first) == start
            if len(got.body) > 2048:
                assert rest.startswith(b"*/")
            received += got.body
            start += len(got.body)
        assert bytes(received) == body
        assert bytes(got.frame.buf).endswith(b"$\r\n")
        assert answer_of(a, tid).frame.code == 200
        growth = sum(w.memory_info().rss for w in workers if psutil.pid_exists(w.pid)) - before
        assert growth < size, f"the workers grew by {growth} bytes"


def test_case30b_an_endless_header_block_closes(net: Net) -> None:
    """Case 30(b): header bytes past the header limit (16 KiB) with no end: closed."""
    with net.client() as c:
        c.send_raw(b"MSRP abcd1234 SEND\r\nTo-Path: " + b"x" * 1000)
        for _ in range(20):
            time.sleep(0.01)
            c.send_raw(b"y" * 1000)
        assert closed(c)
