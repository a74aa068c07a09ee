"""The chunks WebSocket re-chunking adds are transactions of the SEND's sender (relay route,
RFC 4975 §7.1.1, RFC 7977 §5.1, rfc-checklist §2.4): their answers are matched, a failure
reaches the sender as a REPORT with that chunk's Byte-Range, a 413 cuts the message, and an
unanswered chunk times out with REPORT 408.

A live msrpd (2 workers, the default relay route) with a wss listener whose max_message is
small, so a 3 MiB SEND from a plain TCP peer (Bob, no relay of his own: he sends inbound
through Alice's token) reaches Alice, a `websockets` client, as a dozen chunks. Bob on
Alice's worker or on the other one (then the chunk notices and the answers cross the handoff
link to the worker that owns the transaction: Bob's).
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import time
from collections.abc import Iterator

import pytest

from msrpd.protocol import Frame, build_reply
from msrpd.protocol.writer import build_request

from ..integration.relay import Relay
from ..integration.test_flow_cycle import slot_of
from ..msrpclient import MsrpClient, Received, new_tid
from .test_ws_relay import authed, tls_files
from .wsclient import WsMsrpClient

MAX_MESSAGE = 256 * 1024
SIZE = 3 * 1024 * 1024
TIMEOUT = 2.0  # [msrp] transaction_timeout
NEW_TID = re.compile(rb"[0-9a-f]{26}")
RANGE = re.compile(rb"([0-9]+)-([0-9]+|\*)/([0-9]+)")


@pytest.fixture
def relay(make_relay, tmp_path) -> Iterator[tuple[Relay, ssl.SSLContext]]:  # type: ignore[no-untyped-def]
    tls, ctx = tls_files(tmp_path)
    relay: Relay = make_relay(
        children=2,
        tls=tls,
        core={"balance": False},  # Bob stays on the worker the kernel gave him
        msrp={"route": None, "transaction_timeout": TIMEOUT, "max_body": 64 * 1024},
        websocket={"max_message": MAX_MESSAGE},
    )
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    yield relay, ctx


def _parties(relay: Relay, ctx: ssl.SSLContext, apart: bool) -> tuple[WsMsrpClient, MsrpClient]:
    """Alice AUTHed over wss, and Bob (plain TCP) on her worker or on the other one."""
    assert relay.wss_port is not None
    alice = authed(WsMsrpClient(relay.wss_port, tls=ctx, timeout=30), "alice")
    mine = slot_of(relay, alice.ws.socket)
    for _ in range(40):
        bob = MsrpClient(relay.port, timeout=30)
        slot = slot_of(relay, bob.sock)
        if slot is not None and (slot != mine) == apart:
            return alice, bob
        bob.close()
    raise AssertionError("40 connections all landed on one worker")


def _big_send(alice: WsMsrpClient, bob: MsrpClient, body: bytes) -> tuple[bytes, bytes]:
    """(tid, frame) of Bob's SEND of `body` in one chunk to Alice through her token."""
    tid = new_tid()
    headers = [("Message-ID", "big"), ("Byte-Range", f"1-*/{len(body)}")]
    headers.append(("Content-Type", "application/octet-stream"))
    paths = [alice.use_path or "", alice.uri]
    return tid, build_request(tid, b"SEND", paths, [bob.uri], headers, body)


def _chunk_range(frame: Frame) -> tuple[int, int]:
    """(range-start, total) of a chunk Alice got; range-end `*` (it may be interrupted)."""
    m = RANGE.fullmatch(frame.header("Byte-Range") or b"")
    assert m is not None and m[2] == b"*", frame.header("Byte-Range")
    return int(m[1]), int(m[3])


def _check_chunks(chunks: list[Received], body: bytes, last_flag: bytes) -> None:
    """The chunks Alice got carry `body` (or its start) in order: one Message-ID, contiguous
    ranges, `+` on all but the last, a new transaction id each, all named after the worker
    that forwarded the SEND (so their answers go to the owner of its transaction)."""
    at = 0
    for i, got in enumerate(chunks):
        frame = got.frame
        assert frame.method == b"SEND" and frame.message_id == b"big"
        assert NEW_TID.fullmatch(frame.tid) and frame.tid[:6] == chunks[0].frame.tid[:6]
        assert _chunk_range(frame) == (at + 1, len(body))
        assert got.body == body[at : at + len(got.body)]
        at += len(got.body)
        assert frame.flag == (last_flag if i == len(chunks) - 1 else b"+")
    assert len({c.frame.tid for c in chunks}) == len(chunks)


def _chunks_until(alice: WsMsrpClient, size: int, answer: int | None) -> list[Received]:
    """Alice's chunks until `size` body bytes came, each answered `answer` (None: not)."""
    chunks: list[Received] = []
    while sum(len(c.body) for c in chunks) < size:
        got = alice.recv(30)
        chunks.append(got)
        if answer is not None:
            alice.send_raw(build_reply(got.frame, answer, "OK"))
    return chunks


@pytest.mark.parametrize("apart", [False, True], ids=["same-worker", "across-workers"])
def test_every_added_chunk_answered_is_matched(relay, apart: bool) -> None:  # type: ignore[no-untyped-def]
    """Alice answers 200 to every chunk: each answer ends its transaction (tx_unmatched 0),
    Bob gets his 200 and nothing else, and no chunk times out."""
    relay, ctx = relay
    alice, bob = _parties(relay, ctx, apart)
    with alice, bob:
        body = os.urandom(SIZE)
        tid, frame = _big_send(alice, bob, body)
        bob.send_raw(frame)
        chunks = _chunks_until(alice, SIZE, 200)
        assert len(chunks) >= SIZE // MAX_MESSAGE + 1
        assert all(length <= MAX_MESSAGE for _, length in alice.messages[-len(chunks) :])
        _check_chunks(chunks, body, b"$")
        assert hashlib.sha256(b"".join(c.body for c in chunks)).digest() == (
            hashlib.sha256(body).digest()
        )
        ok = bob.recv(30).frame
        assert (ok.tid, ok.code) == (tid, 200)
        with pytest.raises(TimeoutError):  # no REPORT: not a 408 either
            got = bob.recv(TIMEOUT + 1)
            raise AssertionError(bytes(got.frame.buf))
        stats = relay.counters()
        assert (stats["tx_unmatched"], stats["tx_timeouts"]) == (0, 0)


@pytest.mark.parametrize("apart", [False, True], ids=["same-worker", "across-workers"])
def test_413_to_an_added_chunk_reports_and_cuts(relay, apart: bool) -> None:  # type: ignore[no-untyped-def]
    """Alice answers 200 to the first three chunks and 413 to the 3rd added one while the 4th
    added one is being written: Bob gets a REPORT 413 with that chunk's Byte-Range (its
    start to its last byte received), the chunk in progress ends with "#", and no later
    chunk reaches Alice, though Bob sends the rest; Bob's next chunk of the message is
    refused with 413."""
    relay, ctx = relay
    alice, bob = _parties(relay, ctx, apart)
    with alice, bob:
        body = os.urandom(SIZE)
        tid, frame = _big_send(alice, bob, body)
        head = frame.index(b"\r\n\r\n") + 4
        sent = 4 * MAX_MESSAGE + MAX_MESSAGE // 2  # into the 5th chunk (the 4th added)
        bob.send_raw(frame[: head + sent])
        chunks = [alice.recv(30) for _ in range(4)]
        _check_chunks(chunks, body, b"+")
        for got in chunks[:3]:
            alice.send_raw(build_reply(got.frame, 200, "OK"))
        third = chunks[3]
        alice.send_raw(build_reply(third.frame, 413, "Too Large"))
        cut = alice.recv(30)  # the chunk being written, ended with "#"
        _check_chunks([*chunks, cut], body, b"#")
        start = sum(len(c.body) for c in chunks) + 1
        assert start + len(cut.body) - 1 <= sent
        bob.send_raw(frame[head + sent :])
        with pytest.raises(TimeoutError):
            got = alice.recv(TIMEOUT + 1)
            raise AssertionError(bytes(got.frame.buf[:300]))
        ok = bob.recv(30).frame
        assert (ok.tid, ok.code) == (tid, 200)
        report = bob.recv(30).frame
        assert report.method == b"REPORT" and report.header("Status") == b"000 413 Too Large"
        assert (report.message_id, report.to_path) == (b"big", [bob.uri])
        first, _ = _chunk_range(third.frame)
        last = first + len(third.body) - 1
        assert report.header("Byte-Range") == b"%d-%d/%d" % (first, last, SIZE)
        more = bob.request(
            "SEND",
            f"{alice.use_path} {alice.uri}",
            [("Message-ID", "big"), ("Byte-Range", f"{SIZE}-{SIZE}/{SIZE}")],
            b"x",
        )
        refused = bob.recv(30).frame
        assert (refused.tid, refused.code) == (more, 413)
        with pytest.raises(TimeoutError):
            got = alice.recv(1)
            raise AssertionError(bytes(got.frame.buf[:300]))
        stats = relay.counters()
        assert (stats["tx_unmatched"], stats["tx_timeouts"], stats["tx_refused"]) == (0, 0, 1)


def test_unanswered_chunks_each_time_out_with_408(relay) -> None:  # type: ignore[no-untyped-def]
    """Alice answers nothing: after transaction_timeout Bob gets one REPORT 408 per chunk,
    in order, each with its chunk's Byte-Range, together the whole message, nothing more."""
    relay, ctx = relay
    alice, bob = _parties(relay, ctx, apart=True)
    with alice, bob:
        body = os.urandom(SIZE)
        tid, frame = _big_send(alice, bob, body)
        began = time.monotonic()
        bob.send_raw(frame)
        chunks = _chunks_until(alice, SIZE, None)
        _check_chunks(chunks, body, b"$")
        ok = bob.recv(30).frame
        assert (ok.tid, ok.code) == (tid, 200)
        ranges = []
        for _ in chunks:
            report = bob.recv(TIMEOUT + 5).frame
            assert time.monotonic() - began >= TIMEOUT - 0.5
            assert report.method == b"REPORT", report.buf
            assert report.header("Status") == b"000 408 Request Timeout"
            assert (report.message_id, report.to_path) == (b"big", [bob.uri])
            ranges.append(report.header("Byte-Range"))
        expected, at = [], 1
        for got in chunks:
            expected.append(b"%d-%d/%d" % (at, at + len(got.body) - 1, SIZE))
            at += len(got.body)
        assert ranges == expected  # in the order the chunks went out
        with pytest.raises(TimeoutError):
            got = bob.recv(TIMEOUT)
            raise AssertionError(bytes(got.frame.buf))
        stats = relay.counters()
        assert (stats["tx_unmatched"], stats["tx_timeouts"]) == (0, len(chunks))
