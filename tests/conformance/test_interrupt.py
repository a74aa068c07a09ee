"""rfc-checklist §6 case 29 against a live msrpd running the default relay route: a chunk
being written to a connection is interrupted for a frame that waits for that connection,
and a chunk that ends with "#" aborts its message (RFC 4975 §7.1, §7.1.1).

Real msrpd processes (2 workers; conftest.start_relay), real sockets on 127.0.0.1. A (TLS,
AUTHed) receives a 6 MiB SEND that C, a plain TCP peer without a relay, sends through A's
token, on A's worker or the other one (then the stream, the chunk notice and A's answers
cross the handoff link). What waits for A mid-stream: the relay's 200 to a SEND of A's, or
the REPORT a next hop's 415 to one of them brings.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from msrpd.protocol import BodyPiece, Frame, FrameEnd, build_reply
from msrpd.protocol.writer import build_request

from ..integration.test_flow_cycle import slot_of
from ..msrpclient import MsrpClient, new_tid
from . import test_transactions
from .conftest import Net
from .test_transactions import NEW_TID, Peer, _send

TIMEOUT = test_transactions.TIMEOUT  # [msrp] transaction_timeout
SIZE = 6 * 1024 * 1024
FIRST = 2 * 1024 * 1024  # C's first write: the head and this much of the body


net = test_transactions.net  # a relay of its own per test (transaction_timeout 2 s)
peer = test_transactions.peer


def _sender(net: Net, alice: MsrpClient, apart: bool) -> MsrpClient:
    """C: a plain TCP connection on Alice's worker or on the other one."""
    mine = slot_of(net.relay, alice.sock)
    for _ in range(40):
        carol = net.plain()
        slot = slot_of(net.relay, carol.sock)
        if slot is not None and (slot != mine) == apart:
            return carol
        carol.close()
    raise AssertionError("40 connections all landed on one worker")


def _read_at_least(client: MsrpClient, size: int) -> None:
    """Read `size` bytes or more into `client`'s reader (the frames stay to be recv'd)."""
    got = 0
    client.sock.settimeout(10)
    while got < size:
        data = client.sock.recv(1 << 20)
        assert data, "the relay closed the connection"
        got += len(data)
        client.reader.receive_data(data)


@pytest.mark.parametrize(
    ("apart", "waiting", "range_end"),
    [
        (False, "response", "*"),
        (True, "response", str(SIZE)),
        (True, "report", "*"),
    ],
    ids=["same-worker-200", "across-workers-200", "across-workers-report"],
)
def test_chunk_interrupted_for_a_waiting_frame(
    net: Net, peer: Peer, apart: bool, waiting: str, range_end: str
) -> None:
    """Case 29: while C's 6 MiB chunk is written to A, a frame for A waits (the 200 to A's
    own SEND, or a REPORT 415 for an earlier one). A gets the chunk ended with `+`, the
    waiting frame, then a new chunk: a new transaction id, the same Message-ID and headers,
    Byte-Range start = the next byte, range-end as C's said, the rest of the body, `$`.
    A's 200s to both chunks are matched; C gets its 200 and nothing else."""
    alice = net.authed()
    carol = _sender(net, alice, apart)
    token = alice.use_path or ""
    with alice, carol:
        if waiting == "report":  # A's SEND that the next hop will refuse mid-stream
            early = _send(alice, f"{token} {peer.uri}", "m-early", b"early")
            assert alice.recv().frame.code == 200
            refused = peer.recv()
        body = os.urandom(SIZE)
        tid = new_tid()
        headers = [("Message-ID", "m29"), ("Byte-Range", f"1-{range_end}/{SIZE}")]
        headers += [("X-Extra", "kept"), ("Content-Type", "application/octet-stream")]
        frame = build_request(tid, b"SEND", [token, alice.uri], [carol.uri], headers, body)
        head = frame.index(b"\r\n\r\n") + 4
        carol.send_raw(frame[: head + FIRST])
        _read_at_least(alice, 1024 * 1024)  # the chunk is being written to A
        if waiting == "response":
            mine = _send(alice, f"{token} {peer.uri}", "m-a", b"hi")
            forwarded = peer.recv()  # so the relay has routed it: its 200 to A waits
            assert forwarded.message_id == b"m-a"
            peer.answer(forwarded, 200, "OK")
        else:
            peer.answer(refused, 415, "Unsupported")
            time.sleep(0.3)  # the REPORT is written to A's connection: it waits
        carol.send_raw(frame[head + FIRST :])
        first = alice.recv(30)
        between = alice.recv(30).frame
        second = alice.recv(30)
        # The chunk as far as it had gone, ended with "+" under its id.
        f1 = first.frame
        assert f1.method == b"SEND" and NEW_TID.fullmatch(f1.tid) and f1.tid != tid
        assert (f1.message_id, f1.header("X-Extra"), f1.flag) == (b"m29", b"kept", b"+")
        assert f1.header("Byte-Range") == f"1-{range_end}/{SIZE}".encode()
        assert FIRST >= len(first.body) >= 1024 * 1024 and first.body == body[: len(first.body)]
        # What waited.
        if waiting == "response":
            assert (between.tid, between.code, between.to_path) == (mine, 200, [alice.uri])
        else:
            assert between.method == b"REPORT" and between.message_id == b"m-early"
            assert between.header("Status") == b"000 415 Unsupported"
        # The rest, in a new chunk of the same message.
        f2 = second.frame
        assert f2.method == b"SEND" and NEW_TID.fullmatch(f2.tid)
        assert f2.tid not in (tid, f1.tid) and f2.tid[:6] == f1.tid[:6]  # f1's owner's
        assert (f2.message_id, f2.header("X-Extra"), f2.flag) == (b"m29", b"kept", b"$")
        assert (f2.to_path, f2.from_path) == (f1.to_path, f1.from_path)
        assert [n for n, _ in f2.headers()] == [n for n, _ in f1.headers()]
        nxt = len(first.body) + 1
        assert f2.header("Byte-Range") == f"{nxt}-{range_end}/{SIZE}".encode()
        whole = first.body + second.body
        assert hashlib.sha256(whole).digest() == hashlib.sha256(body).digest()
        for got in (first, second):
            alice.send_raw(build_reply(got.frame, 200, "OK"))
        ok = carol.recv(30).frame
        assert (ok.tid, ok.code) == (tid, 200)
        for party in (alice, carol):
            with pytest.raises(TimeoutError):
                got = party.recv(TIMEOUT + 1)
                raise AssertionError(bytes(got.frame.buf[:300]))
        stats = net.relay.counters()
        assert (stats["tx_unmatched"], stats["tx_timeouts"]) == (0, 0)
        if waiting == "report":
            assert early  # A's SEND that brought the REPORT


def test_nothing_waits_nothing_cut(net: Net, peer: Peer) -> None:
    """The same 6 MiB chunk with nothing waiting for A reaches A as one chunk under one id."""
    alice = net.authed()
    carol = _sender(net, alice, apart=True)
    token = alice.use_path or ""
    with alice, carol:
        body = os.urandom(SIZE)
        tid = new_tid()
        headers = [("Message-ID", "m29n"), ("Byte-Range", f"1-*/{SIZE}")]
        headers.append(("Content-Type", "application/octet-stream"))
        carol.send_raw(build_request(tid, b"SEND", [token, alice.uri], [carol.uri], headers, body))
        got = alice.recv(30)
        assert (got.frame.flag, got.frame.message_id, got.body) == (b"$", b"m29n", body)
        alice.send_raw(build_reply(got.frame, 200, "OK"))
        assert carol.recv(30).frame.code == 200
        stats = net.relay.counters()
        assert (stats["tx_unmatched"], stats["tx_timeouts"]) == (0, 0)


def _chunk(
    client: MsrpClient, to: str, body: bytes, first: int, total: int, flag: bytes
) -> tuple[bytes, bytes]:
    """(tid, frame) of one chunk of message m29h: `body` from byte `first`, ending `flag`."""
    tid = new_tid()
    last = first + len(body) - 1
    headers = [("Message-ID", "m29h"), ("Byte-Range", f"{first}-{last}/{total}")]
    headers.append(("Content-Type", "application/octet-stream"))
    frame = build_request(tid, b"SEND", to.split(), [client.uri], headers, body)
    return tid, frame[:-3] + flag + b"\r\n"


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024], ids=["whole", "streamed"])
def test_hash_chunk_forwarded_and_later_chunks_refused(net: Net, peer: Peer, size: int) -> None:
    """Case 29, second half: A's chunk ending with "#" (a whole one, a streamed one) is
    answered 200 and reaches B with "#" under a new id; A's next chunk of that Message-ID is
    answered 413 and not forwarded (counted in tx_refused); another message still goes."""
    alice = net.authed()
    token = alice.use_path or ""
    total = 2 * size
    with alice:
        body = os.urandom(size)
        tid, frame = _chunk(alice, f"{token} {peer.uri}", body, 1, total, b"#")
        alice.send_raw(frame)
        ok = alice.recv(30).frame
        assert (ok.tid, ok.code) == (tid, 200)
        head, got, flag = _peer_frame(peer)
        assert NEW_TID.fullmatch(head.tid) and flag == b"#"
        assert head.header("Byte-Range") == f"1-{size}/{total}".encode()
        assert head.message_id == b"m29h" and got == body
        peer.answer(head, 200, "OK")
        later, frame = _chunk(alice, f"{token} {peer.uri}", b"rest", size + 1, total, b"$")
        alice.send_raw(frame)
        refused = alice.recv(30).frame
        assert (refused.tid, refused.code) == (later, 413)
        other = _send(alice, f"{token} {peer.uri}", "m29-other", b"fine")
        assert (alice.recv().frame.tid, 200) == (other, 200)
        fine = peer.recv()
        assert (fine.message_id, bytes(fine.body or b"")) == (b"m29-other", b"fine")
        peer.answer(fine, 200, "OK")
        with pytest.raises(TimeoutError):
            peer.recv(1)
        with pytest.raises(TimeoutError):
            got2 = alice.recv(1)
            raise AssertionError(bytes(got2.frame.buf[:300]))
        stats = net.relay.counters()
        assert (stats["tx_refused"], stats["tx_unmatched"]) == (1, 0)


def _peer_frame(peer: Peer) -> tuple[Frame, bytes, bytes]:
    """(head, body, flag) of the next frame B gets, whole or streamed."""
    event = peer.event(30)
    assert isinstance(event, Frame)
    if not event.streamed:
        assert event.flag is not None
        return event, bytes(event.body or b""), event.flag
    body = bytearray()
    while True:
        piece = peer.event(30)
        if isinstance(piece, FrameEnd):
            return event, bytes(body), piece.flag
        assert isinstance(piece, BodyPiece)
        body += piece.data
