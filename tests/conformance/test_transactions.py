"""The relay's transaction layer against a live msrpd running the default relay route
(rfc-checklist §6 cases 16, 18, 23-27c, 30d): msrp.t_reply / msrp.t_relay, new transaction
ids, responses mapped back, Failure-Report, the relay's own REPORTs, the transaction timeout.

Real msrpd processes (2 workers; conftest.start_relay), real sockets on 127.0.0.1; A AUTHs
over TLS. Next hops are plain TCP peers this test plays (`Peer`): relay-to-relay mutual TLS
(case 16 as written) is not supported by the relay route, so AUTH forwarding is shown to a
peer that answers 401 and 200 over plain TCP. Every test checks each frame every party gets:
who, once, in order, with which transaction id.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits, build_reply
from msrpd.protocol.writer import build_request
from msrpd.rundir import handoff_path

from ..integration.relay import Relay, free_port
from ..integration.test_flow_cycle import slot_of
from ..msrpclient import MsrpClient, new_tid
from .conftest import Net, start_relay

TIMEOUT = 2.0  # [msrp] transaction_timeout for these tests
QUIET = 0.6  # how long "nothing more arrives" is watched
NEW_TID = re.compile(rb"[0-9a-f]{26}")


class Peer:
    """A next hop without a relay (B, or R2): it listens, the relay connects to it."""

    def __init__(self, name: str = "kb", max_body: int = 64 << 20) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"msrp://127.0.0.1:{self.listener.getsockname()[1]}/{name};tcp"
        self.sock: socket.socket | None = None
        self.reader = FrameReader(ReaderLimits(max_body=max_body))

    def recv(self, timeout: float = 5.0) -> Frame:
        """The next frame, whole."""
        event = self.event(timeout)
        assert isinstance(event, Frame) and not event.streamed, event
        return event

    def event(self, timeout: float = 5.0) -> object:
        """The next reader event (a streamed frame comes as head, pieces, end)."""
        deadline = time.monotonic() + timeout
        if self.sock is None:
            self.listener.settimeout(timeout)
            self.sock, _ = self.listener.accept()
        while True:
            for event in self.reader.events():
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing came to the peer")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("the relay closed the peer's connection")
            self.reader.receive_data(data)

    def answer(self, frame: Frame, code: int, reason: str, extra: str = "") -> None:
        assert self.sock is not None
        self.sock.sendall(build_reply(frame, code, reason, extra))

    def close(self) -> None:
        self.listener.close()
        if self.sock is not None:
            self.sock.close()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    """A relay of its own for each test: the counters it reads are its own."""
    found = start_relay(tmp_path, transaction_timeout=TIMEOUT)
    try:
        yield found
    finally:
        _close_open()  # before the stop, which would wait drain_timeout for them
        found.relay.stop()


_OPEN: list[MsrpClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> None:
    yield  # type: ignore[misc]
    _close_open()


def _close_open() -> None:
    while _OPEN:
        _OPEN.pop().close()


def _elsewhere(net: Net, than: MsrpClient, make: Callable[[], MsrpClient]) -> MsrpClient:
    """A client from `make` that the kernel put on the other worker than `than`'s."""
    slot = slot_of(net.relay, than.sock)
    for _ in range(40):
        client = make()
        other = slot_of(net.relay, client.sock)
        if other is not None and other != slot:
            _OPEN.append(client)
            return client
        client.close()
    raise AssertionError("40 connections all landed on one worker")


def _pair(net: Net, peer_authed: bool = False) -> tuple[MsrpClient, MsrpClient]:
    """A (TLS, AUTHed) and, on the other worker, a plain TCP peer C without a relay, or
    (peer_authed) Bob over TLS with a token of his own."""
    alice = _authed(net)
    make = (lambda: net.authed("bob")) if peer_authed else net.plain
    return alice, _elsewhere(net, alice, make)


@pytest.fixture
def peer() -> Peer:
    p = Peer()
    yield p  # type: ignore[misc]
    p.close()


def _authed(net: Net, user: str = "alice") -> MsrpClient:
    client = net.authed(user)
    _OPEN.append(client)
    return client


def _stats(relay: Relay) -> dict[str, int]:
    return relay.counters()


def _send(
    client: MsrpClient, to_path: str, msgid: str, body: bytes, fr: str | None = None
) -> bytes:
    headers = [("Message-ID", msgid), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
    if fr is not None:
        headers.append(("Failure-Report", fr))
    headers.append(("Content-Type", "text/plain"))
    return client.request("SEND", to_path, headers, body)


def _nothing(*parties: MsrpClient | Peer, wait: float = QUIET) -> None:
    for party in parties:
        with pytest.raises(TimeoutError):
            party.recv(wait)


def _headers(frame: Frame) -> list[bytes]:
    return [name.lower() for name, _ in frame.headers()]


def _forwarded(got: Frame, sent_tid: bytes, to: str, frm: str) -> None:
    """`got` is a forwarded request: a new id of ours, paths rotated, end-line renamed."""
    assert NEW_TID.fullmatch(got.tid) and got.tid != sent_tid, got.tid
    assert got.to_path == [to] and got.from_path == frm.split(), got.buf
    assert got.buf.endswith(b"-------" + got.tid + b"$\r\n")
    assert sent_tid not in got.buf


def test_outbound_send_new_tid_and_200_consumed(net: Net, peer: Peer) -> None:
    """Case 18: A's SEND `TA b` (no Failure-Report: yes) over TLS: A gets 200 at once with its
    tid, To-Path a, From-Path TA; B gets the SEND under a new id, To-Path b, From-Path `TA a`,
    every other header and the body unchanged; B's 200 is not passed to A."""
    alice = _authed(net)
    assert (alice.use_path or "").startswith("msrps://")
    token = alice.use_path or ""
    body = bytes(range(100))
    tid = _send(alice, f"{token} {peer.uri}", "m18", body)
    ok = alice.recv().frame
    assert (ok.tid, ok.code, ok.to_path, ok.from_path) == (tid, 200, [alice.uri], [token])
    got = peer.recv()
    _forwarded(got, tid, peer.uri, f"{token} {alice.uri}")
    names = [b"to-path", b"from-path", b"message-id", b"byte-range", b"content-type"]
    assert _headers(got) == names
    assert (got.message_id, got.header("Byte-Range")) == (b"m18", b"1-100/100")
    assert (got.header("Content-Type"), bytes(got.body or b"")) == (b"text/plain", body)
    peer.answer(got, 200, "OK")
    _nothing(alice, peer)
    stats = _stats(net.relay)
    assert (stats["tx_unmatched"], stats["tx_timeouts"]) == (0, 0)


def test_failure_report_no(net: Net, peer: Peer) -> None:
    """Case 23: Failure-Report no: no response to A at all, forwarded to B; B's 481 brings
    no REPORT (it matches no transaction: counted)."""
    alice = _authed(net)
    tid = _send(alice, f"{alice.use_path} {peer.uri}", "m23", b"hello", fr="no")
    got = peer.recv()
    _forwarded(got, tid, peer.uri, f"{alice.use_path} {alice.uri}")
    assert got.header("Failure-Report") == b"no"
    peer.answer(got, 481, "Session Does Not Exist")
    _nothing(alice, wait=TIMEOUT + 1)
    assert _stats(net.relay)["tx_unmatched"] == 1


def test_failure_report_partial_error_becomes_report(net: Net, peer: Peer) -> None:
    """Case 24: Failure-Report partial: no 200 to A; B's 415 becomes a REPORT to A: new tid,
    To-Path a, From-Path TA, the SEND's Message-ID, Byte-Range of what arrived, Status 000
    415, no FR or SR. A second partial SEND that B answers 200: nothing to A, ever."""
    alice = _authed(net)
    token = alice.use_path or ""
    tid = _send(alice, f"{token} {peer.uri}", "m24", b"x" * 10, fr="partial")
    got = peer.recv()
    _forwarded(got, tid, peer.uri, f"{token} {alice.uri}")
    peer.answer(got, 415, "Unsupported Media Type")
    report = alice.recv().frame
    assert report.method == b"REPORT" and report.tid not in (tid, got.tid)
    assert (report.to_path, report.from_path) == ([alice.uri], [token])
    assert _headers(report) == [b"to-path", b"from-path", b"message-id", b"byte-range", b"status"]
    assert (report.message_id, report.header("Byte-Range")) == (b"m24", b"1-10/10")
    assert report.header("Status") == b"000 415 Unsupported Media Type"
    second = _send(alice, f"{token} {peer.uri}", "m24b", b"y", fr="partial")
    got2 = peer.recv()
    _forwarded(got2, second, peer.uri, f"{token} {alice.uri}")
    peer.answer(got2, 200, "OK")
    _nothing(alice, peer, wait=TIMEOUT + 1)  # partial: no 408 either
    assert _stats(net.relay)["tx_timeouts"] == 0


def test_timeout_reports_408_and_late_response_dropped(net: Net, peer: Peer) -> None:
    """Case 25: FR yes, B accepts and never answers: 200 to A at once, REPORT 000 408
    transaction_timeout (±1 s) after the SEND was written; B's late 200 is dropped."""
    alice = _authed(net)
    token = alice.use_path or ""
    tid = _send(alice, f"{token} {peer.uri}", "m25", b"abc", fr="yes")
    ok = alice.recv().frame
    assert (ok.tid, ok.code) == (tid, 200)
    got = peer.recv()
    written = time.monotonic()
    _forwarded(got, tid, peer.uri, f"{token} {alice.uri}")
    report = alice.recv(TIMEOUT + 3).frame
    late = time.monotonic() - written
    assert TIMEOUT - 1 <= late <= TIMEOUT + 1, late
    assert report.method == b"REPORT" and report.header("Status") == b"000 408 Request Timeout"
    assert (report.message_id, report.header("Byte-Range")) == (b"m25", b"1-3/3")
    assert (report.to_path, report.from_path) == ([alice.uri], [token])
    peer.answer(got, 200, "OK")
    _nothing(alice, peer)
    stats = _stats(net.relay)
    assert (stats["tx_timeouts"], stats["tx_unmatched"]) == (1, 1)


def test_next_hop_refused_reports_408_once(net: Net) -> None:
    """Case 26: the next hop refuses the connection: 200, then one REPORT 000 408, nothing
    after (not a second one when the transaction timeout would have passed)."""
    alice = _authed(net)
    token = alice.use_path or ""
    dead = f"msrp://127.0.0.1:{free_port()}/gone;tcp"
    tid = _send(alice, f"{token} {dead}", "m26", b"abc")
    assert alice.recv().frame.code == 200
    report = alice.recv(5).frame
    assert report.method == b"REPORT" and report.tid != tid
    assert (report.message_id, report.header("Status")) == (b"m26", b"000 408 Request Timeout")
    assert (report.to_path, report.from_path) == ([alice.uri], [token])
    _nothing(alice, wait=TIMEOUT + 1)
    assert _stats(net.relay)["tx_timeouts"] == 0


def test_auth_forwarded_and_answers_mapped_back(net: Net) -> None:
    """Case 16, R2 over plain TCP (relay peers over mutual TLS are not supported), A over
    TLS: A's AUTH `TA r2`: R2 gets it under a new id, To-Path r2,
    From-Path `TA a`; the relay answers nothing itself; R2's 401 and then 200 reach A with
    A's tids, To-Path a, From-Path `TA r2`, Use-Path and WWW-Authenticate untouched. A
    third AUTH that R2 never answers gets A a 408 after transaction_timeout."""
    r2 = Peer("")
    r2.uri = r2.uri.replace("/;", ";")  # a relay's bare URI
    alice = _authed(net)
    token = alice.use_path or ""
    first = alice.request("AUTH", f"{token} {r2.uri}")
    got = r2.recv()
    _forwarded(got, first, r2.uri, f"{token} {alice.uri}")
    _nothing(alice)
    r2.answer(got, 401, "Unauthorized", 'WWW-Authenticate: Digest realm="r2", nonce="n1"')
    challenge = alice.recv().frame
    assert (challenge.tid, challenge.code) == (first, 401)
    assert (challenge.to_path, challenge.from_path) == ([alice.uri], [token, r2.uri])
    assert challenge.header("WWW-Authenticate") == b'Digest realm="r2", nonce="n1"'
    second = alice.request("AUTH", f"{token} {r2.uri}", [("Authorization", "Digest x=1")])
    got2 = r2.recv()
    _forwarded(got2, second, r2.uri, f"{token} {alice.uri}")
    assert got2.tid != got.tid and got2.header("Authorization") == b"Digest x=1"
    use_path = f"{token} msrp://r2.example.org:2855/t2;tcp"
    r2.answer(got2, 200, "OK", f"Use-Path: {use_path}\r\nExpires: 600")
    ok = alice.recv().frame
    assert (ok.tid, ok.code) == (second, 200)
    assert (ok.to_path, ok.from_path) == ([alice.uri], [token, r2.uri])
    assert (ok.header("Use-Path"), ok.header("Expires")) == (use_path.encode(), b"600")
    third = alice.request("AUTH", f"{token} {r2.uri}")
    r2.recv()
    timeout = alice.recv(TIMEOUT + 3).frame
    assert (timeout.tid, timeout.code) == (third, 408)
    assert (timeout.to_path, timeout.from_path) == ([alice.uri], [token])
    _nothing(alice, r2)
    r2.close()


def test_unknown_method_inbound_across_workers(net: Net) -> None:
    """Case 27c, inbound, the two ends on different workers: C's FOO `TA a` reaches A over
    cA under a new id (To-Path a, From-Path `TA c`), no relay response; A's 200 reaches C
    with C's tid, To-Path c, From-Path `TA a` (handed to C's worker, which owns the
    transaction). A response with that id on another connection does nothing."""
    alice, carol = _pair(net)
    assert slot_of(net.relay, alice.sock) != slot_of(net.relay, carol.sock)
    token = alice.use_path or ""
    sent = carol.request("FOO", f"{token} {alice.uri}", [("X-Foo", "bar")], b"hi")
    got = alice.recv().frame
    _forwarded(got, sent, alice.uri, f"{token} {carol.uri}")
    assert (got.method, got.header("X-Foo"), bytes(got.body or b"")) == (b"FOO", b"bar", b"hi")
    _nothing(carol)
    # A thief on yet another connection answers first, with the id it should not know.
    thief = net.plain()
    _OPEN.append(thief)
    thief.send_raw(build_reply(got, 200, "OK"))
    # An id naming a worker that does not exist (slot 7): dropped, never handed anywhere.
    ghost = b"070001" + got.tid[6:]
    thief.send_raw(build_reply(got, 200, "OK").replace(got.tid, ghost))
    _nothing(carol)
    alice.send_raw(build_reply(got, 200, "OK"))
    answer = carol.recv().frame
    assert (answer.tid, answer.code) == (sent, 200)
    assert (answer.to_path, answer.from_path) == ([carol.uri], [token, alice.uri])
    alice.send_raw(build_reply(got, 200, "OK"))  # a duplicate: its transaction is over
    _nothing(carol, alice, thief)
    assert _stats(net.relay)["tx_unmatched"] == 3
    assert handoff_path(net.relay.run_dir, 7, 1).name not in net.relay.log()


def test_inbound_send_error_across_workers_reports(net: Net) -> None:
    """An inbound SEND (C -> `TA a`, C and A on different workers): 200 to C, A gets it
    under a new id; A's 413 reaches C's worker and becomes C's REPORT."""
    alice, carol = _pair(net)
    token = alice.use_path or ""
    tid = _send(carol, f"{token} {alice.uri}", "m-in", b"0123456789")
    assert (carol.recv().frame.tid, 200) == (tid, 200)
    got = alice.recv().frame
    _forwarded(got, tid, alice.uri, f"{token} {carol.uri}")
    alice.send_raw(build_reply(got, 413, "Too Large"))
    report = carol.recv().frame
    assert report.method == b"REPORT" and report.header("Status") == b"000 413 Too Large"
    assert (report.to_path, report.from_path) == ([carol.uri], [token])
    assert (report.message_id, report.header("Byte-Range")) == (b"m-in", b"1-10/10")
    _nothing(carol, alice)


def test_report_forwarded_without_transaction(net: Net, peer: Peer) -> None:
    """Case 27a's outbound twin: A's REPORT `TA b` is forwarded under a new id, never
    answered by the relay, and no transaction waits for it (no 408 ever)."""
    alice = _authed(net)
    token = alice.use_path or ""
    headers = [("Message-ID", "m27"), ("Byte-Range", "1-5/5"), ("Status", "000 200 OK")]
    tid = alice.request("REPORT", f"{token} {peer.uri}", headers)
    got = peer.recv()
    _forwarded(got, tid, peer.uri, f"{token} {alice.uri}")
    assert got.header("Status") == b"000 200 OK"
    _nothing(alice, peer, wait=TIMEOUT + 1)
    assert _stats(net.relay)["tx_timeouts"] == 0


def test_streamed_send_end_line_renamed(net: Net, peer: Peer) -> None:
    """A SEND over max_body (streamed): its end-line reaches B under the new id too, and a
    timeout REPORT gives the range-end of the bytes that arrived."""
    alice = _authed(net)
    token = alice.use_path or ""
    body = b"z" * (2 * 1024 * 1024)
    tid = new_tid()
    headers = [("Message-ID", "big"), ("Byte-Range", f"1-*/{len(body)}")]
    headers.append(("Content-Type", "application/octet-stream"))
    frame = build_request(tid, b"SEND", [token, peer.uri], [alice.uri], headers, body)
    alice.send_raw(frame)
    assert alice.recv(10).frame.code == 200
    got = peer.recv(10)
    _forwarded(got, tid, peer.uri, f"{token} {alice.uri}")
    assert bytes(got.body or b"") == body
    report = alice.recv(TIMEOUT + 5).frame
    assert report.header("Status") == b"000 408 Request Timeout"
    assert report.header("Byte-Range") == f"1-{len(body)}/{len(body)}".encode()


def test_next_hop_413_mid_message(net: Net) -> None:
    """Case 30d: B answers 413 while A's 3 MiB chunk is being forwarded: B's copy of the
    chunk ends at once with "#" under the new id, none of the rest reaches B; A gets its
    200 (the chunk arrived) then a REPORT 413 with the range received; A's next chunk of
    that message is answered 413 and not forwarded; another message still goes through."""
    peer = Peer(max_body=16 * 1024)
    alice = _authed(net)
    token = alice.use_path or ""
    body = b"q" * (3 * 1024 * 1024)
    tid = new_tid()
    total = 2 * len(body)
    headers = [("Message-ID", "m30"), ("Byte-Range", f"1-*/{total}")]
    headers.append(("Content-Type", "application/octet-stream"))
    frame = build_request(tid, b"SEND", [token, peer.uri], [alice.uri], headers, body)
    cut = frame.index(body) + 1300 * 1024
    alice.send_raw(frame[:cut])
    head = peer.event(10)
    assert isinstance(head, Frame) and head.streamed
    relay_head_checks(head, tid, peer.uri, f"{token} {alice.uri}")
    got = bytearray()
    while len(got) < 64 * 1024:  # the relay is forwarding the body
        piece = peer.event(10)
        assert isinstance(piece, BodyPiece)
        got += piece.data
    peer.answer(head, 413, "Too Large")
    while True:
        event = peer.event(10)
        if isinstance(event, FrameEnd):
            break
        assert isinstance(event, BodyPiece)
        got += event.data
    assert (event.tid, event.flag) == (head.tid, b"#")
    assert len(got) <= 1300 * 1024 and bytes(got) == body[: len(got)]
    alice.send_raw(frame[cut:])
    ok = alice.recv(10).frame
    assert (ok.tid, ok.code) == (tid, 200)
    report = alice.recv(10).frame
    assert report.method == b"REPORT" and report.header("Status") == b"000 413 Too Large"
    assert report.message_id == b"m30"
    m = re.fullmatch(rb"1-([0-9]+)/([0-9]+)", report.header("Byte-Range") or b"")
    assert m is not None and int(m[2]) == total
    assert len(got) <= int(m[1]) <= 1300 * 1024, (len(got), m[1])
    second = _send(alice, f"{token} {peer.uri}", "m30", b"more")
    refused = alice.recv().frame
    assert (refused.tid, refused.code) == (second, 413)
    other = _send(alice, f"{token} {peer.uri}", "m30-other", b"fine")
    assert (alice.recv().frame.tid, 200) == (other, 200)
    fine = peer.recv()
    _forwarded(fine, other, peer.uri, f"{token} {alice.uri}")
    assert (fine.message_id, bytes(fine.body or b"")) == (b"m30-other", b"fine")
    _nothing(alice, peer)
    assert _stats(net.relay)["tx_refused"] == 1
    peer.close()


def relay_head_checks(head: Frame, sent_tid: bytes, to: str, frm: str) -> None:
    """A forwarded streamed head: a new id of ours, paths rotated."""
    assert NEW_TID.fullmatch(head.tid) and head.tid != sent_tid
    assert head.to_path == [to] and head.from_path == frm.split()


def test_both_ends_on_this_relay_across_workers(net: Net) -> None:
    """`TA TB b` (both ends AUTHed here, on different workers): the inner pass through our
    own URI forwards it to Bob under a new id, To-Path b, From-Path `TB TA a`; Bob's 415
    becomes A's REPORT (To-Path a, From-Path TA); a FOO's 200 comes back to A with A's id,
    To-Path a, From-Path `TA TB b`."""
    alice, bob = _pair(net, peer_authed=True)
    ta, tb = alice.use_path or "", bob.use_path or ""
    tid = _send(alice, f"{ta} {tb} {bob.uri}", "m-both", b"hey")
    assert (alice.recv().frame.tid, 200) == (tid, 200)
    got = bob.recv().frame
    _forwarded(got, tid, bob.uri, f"{tb} {ta} {alice.uri}")
    bob.send_raw(build_reply(got, 415, "Unsupported"))
    report = alice.recv().frame
    assert report.method == b"REPORT" and report.header("Status") == b"000 415 Unsupported"
    assert (report.to_path, report.from_path) == ([alice.uri], [ta])
    assert (report.message_id, report.header("Byte-Range")) == (b"m-both", b"1-3/3")
    foo = alice.request("FOO", f"{ta} {tb} {bob.uri}")
    got2 = bob.recv().frame
    _forwarded(got2, foo, bob.uri, f"{tb} {ta} {alice.uri}")
    bob.send_raw(build_reply(got2, 200, "OK"))
    answer = alice.recv().frame
    assert (answer.tid, answer.code) == (foo, 200)
    assert (answer.to_path, answer.from_path) == ([alice.uri], [ta, tb, bob.uri])
    _nothing(alice, bob)
