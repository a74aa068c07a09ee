"""The 200 for a streamed SEND leaves only once the whole chunk is in (RFC 4976 §6.4.1), tried
the way AG's msrplib (Blink, SylkServer) sends: it writes the WHOLE chunk and only then reads
the response, dropping one that came early (issue 12 item 10).

Alice and Bob sit on different workers (`balance = false`, so nothing moves them; placement
read from the workers' "conns"), so every chunk also crosses a handoff link. Right before
Alice writes the end-line, Bob has received the whole body and select() says Alice's socket
holds nothing to read; the 200 comes after the end-line. A chunk the sender interrupts by
closing gets no 200 at all, and Bob gets its end-line with "#" (RFC 4975 §7.1).
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.protocol.writer import build_reply, build_request

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, running, wait_for
from .test_colocate import _owners, _port

MIB = 1 << 20
EARLY_WINDOW = 0.3
"""Seconds left for an early response to arrive before select() looks for it."""


class _Bob(threading.Thread):
    """Reads Bob's connection in pieces (a whole-frame limit of 1 MiB), hashing the body of the
    streamed SEND, and answers it with a 200 once its end-line is in."""

    def __init__(self, client: MsrpClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.sha = hashlib.sha256()
        self.received = 0
        self.head: Frame | None = None
        self.flag: bytes | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        reader = FrameReader(ReaderLimits(max_body=MIB))
        sock = self.client.sock
        sock.settimeout(120)
        try:
            while not self.done.is_set():
                data = sock.recv(1 << 20)
                if not data:
                    raise EOFError("the relay closed Bob's connection")
                reader.receive_data(data)
                for event in reader.events():
                    self._event(event)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self.done.set()

    def _event(self, event: object) -> None:
        if isinstance(event, Frame):
            assert event.method == b"SEND" and event.streamed, event
            self.head = event
        elif isinstance(event, BodyPiece):
            self.sha.update(event.data)
            self.received += len(event.data)
        elif isinstance(event, FrameEnd):
            assert self.head is not None
            self.flag = event.flag
            self.client.sock.sendall(build_reply(self.head, 200, "OK"))
            self.done.set()

    def finish(self) -> None:
        assert self.done.wait(120), "Bob never got the end of the chunk"
        self.join(10)
        assert self.error is None, self.error


def _worker_of(relay: Relay, client: MsrpClient) -> int:
    """The slot of the worker serving `client` (once it has accepted the connection)."""
    port = _port(client)
    owners = wait_for(lambda: (found := _owners(relay, 2)).get(port) is not None and found)
    assert isinstance(owners, dict)
    return owners[port]


def _split_pair(relay: Relay) -> tuple[MsrpClient, MsrpClient]:
    """Alice and Bob, authenticated, on different workers."""
    alice = MsrpClient(relay.port, timeout=30)
    assert alice.auth("alice", PASSWORDS["alice"], REALM).frame.code == 200
    for _ in range(64):
        bob = MsrpClient(relay.port, timeout=30)
        if _worker_of(relay, bob) != _worker_of(relay, alice):
            assert bob.auth("bob", PASSWORDS["bob"], REALM).frame.code == 200
            return alice, bob
        bob.close()
    raise AssertionError("64 connections in a row landed on Alice's worker")


@pytest.fixture(scope="module")
def shared() -> Iterator[Relay]:
    """One relay for the module: each test opens its own Alice and Bob and closes them."""
    with running(children=2, core={"balance": False}) as relay:
        yield relay


def _to(bob: MsrpClient) -> list[str]:
    return [bob.use_path or "", bob.uri]


def _chunk(
    alice: MsrpClient, to_path: list[str], body: bytes, total: int, flag: bytes
) -> tuple[bytes, bytes, bytes]:
    """(tid, the chunk without its end-line, the end-line) of one SEND from Alice."""
    tid = new_tid()
    headers = [("Message-ID", f"m{tid.decode()}"), ("Byte-Range", f"1-*/{total}")]
    headers.append(("Content-Type", "application/octet-stream"))
    frame = build_request(tid, b"SEND", to_path, [alice.uri], headers, body, flag)
    end_line = b"-------" + tid + flag + b"\r\n"
    assert frame.endswith(b"\r\n" + end_line)
    return tid, frame[: -len(end_line)], end_line


def _nothing_to_read(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def _send_whole_chunk_then_read(alice: MsrpClient, bob: MsrpClient, size: int, flag: bytes) -> None:
    body = os.urandom(size)
    receiver = _Bob(bob)
    receiver.start()
    tid, chunk, end_line = _chunk(alice, _to(bob), body, size, flag)
    alice.send_raw(chunk)
    # Bob has every body byte but the few the relay holds back in case they start the
    # end-line: the relay has long read the head and routed the frame.
    wait_for(lambda: receiver.received >= size - 64, timeout=120, what="Bob has the body")
    time.sleep(EARLY_WINDOW)
    assert _nothing_to_read(alice.sock), f"a response to {tid!r} came before its end-line"
    alice.send_raw(end_line)  # the last byte of the chunk
    response = alice.recv(timeout=30).frame
    assert (response.tid, response.code) == (tid, 200), response
    receiver.finish()
    assert receiver.flag == flag
    assert receiver.received == size
    assert receiver.sha.digest() == hashlib.sha256(body).digest()


@pytest.mark.parametrize("mib", [2, 10, 64])
def test_msrplib_style_send_gets_its_200_after_the_whole_chunk(shared: Relay, mib: int) -> None:
    alice, bob = _split_pair(shared)
    with alice, bob:
        _send_whole_chunk_then_read(alice, bob, mib * MIB, b"$")


def test_aborted_chunk_is_answered_after_its_end_line(shared: Relay) -> None:
    """A chunk ending with "#" has ended too (RFC 4975 §7.1): its 200 follows the end-line."""
    alice, bob = _split_pair(shared)
    with alice, bob:
        _send_whole_chunk_then_read(alice, bob, 2 * MIB, b"#")


def test_chunk_cut_by_closing_gets_no_200(shared: Relay) -> None:
    alice, bob = _split_pair(shared)
    with alice, bob:
        size, sent = 10 * MIB, 3 * MIB
        receiver = _Bob(bob)
        receiver.start()
        tid, chunk, _ = _chunk(alice, _to(bob), os.urandom(size), size, b"$")
        alice.send_raw(chunk[: len(chunk) - (size - sent)])
        wait_for(lambda: receiver.received >= sent - 64, timeout=60, what="Bob has 3 MiB")
        time.sleep(EARLY_WINDOW)
        assert _nothing_to_read(alice.sock), "a response came before the chunk ended"
        alice.sock.shutdown(socket.SHUT_WR)  # Alice gives up: the relay reads EOF mid-chunk
        alice.sock.settimeout(10)
        answer = b""
        while data := alice.sock.recv(65536):
            answer += data
        assert b"MSRP " + tid + b" 200" not in answer, answer[:200]
        receiver.finish()
        assert receiver.flag == b"#"  # Bob's framing stays sound (RFC 4975 §7.1)
        assert receiver.received < size


def test_error_reply_to_a_streamed_send_also_waits_for_the_end_line(shared: Relay) -> None:
    """Every answer the route writes is held, not only the 200: here the 481 for a session
    that does not exist."""
    with MsrpClient(shared.port, timeout=30) as alice:
        nosuch = [f"msrp://127.0.0.1:{shared.port}/nosuch;tcp", alice.uri]
        tid, chunk, end_line = _chunk(alice, nosuch, os.urandom(2 * MIB), 2 * MIB, b"$")
        alice.send_raw(chunk)
        time.sleep(EARLY_WINDOW * 2)  # the relay has read all the socket buffers let through
        assert _nothing_to_read(alice.sock), "the 481 came before the end-line"
        alice.send_raw(end_line)
        response = alice.recv(timeout=30).frame
        assert (response.tid, response.code) == (tid, 481), response
