"""Slowloris (issue 12 item 6): a frame head must complete within `[core] head_timeout` of
its first byte. Real relay, real sockets: a head sent one byte per 0.5 s is cut after about
head_timeout; frames at a steady pace, each head split over two writes, and a streamed body
that takes longer than head_timeout are not."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

from msrpd.protocol.writer import build_request

from ..msrpclient import MsrpClient, new_tid
from .relay import PASSWORDS, REALM, Relay, wait_for

HEAD_TIMEOUT = 2.0


def _authed(port: int, user: str) -> MsrpClient:
    client = MsrpClient(port, timeout=30)
    assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return client


def _relay(make_relay) -> Relay:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2, core={"head_timeout": HEAD_TIMEOUT})
    assert relay.start().returncode == 0, relay.log()
    return relay


def _head_timeouts(relay: Relay) -> int:
    out = relay.cli("ctl", "--json", "stats.get")
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["total"]["head_timeouts"])


def test_a_head_sent_byte_by_byte_is_cut_after_head_timeout(make_relay) -> None:
    relay = _relay(make_relay)
    head = (
        b"MSRP slow1 SEND\r\nTo-Path: msrp://127.0.0.1:9/x;tcp\r\nFrom-Path: msrp://a:1/y;tcp\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
    closed = threading.Event()

    def watch() -> None:
        with contextlib.suppress(OSError):
            sock.recv(1)  # nothing is ever answered: returns at the close
        closed.set()

    threading.Thread(target=watch, daemon=True).start()
    started = time.monotonic()
    sent = 0
    for byte in head:
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        sent += 1
        if closed.wait(0.5) or time.monotonic() - started > HEAD_TIMEOUT + 6:
            break
    took = time.monotonic() - started
    sock.close()
    assert closed.is_set(), f"still open after {took:.1f} s and {sent} bytes"
    # Counted from the first byte, checked once a second: about 2 to 3 s on an idle machine.
    assert HEAD_TIMEOUT - 0.5 < took < HEAD_TIMEOUT + 4, took
    assert sent < len(head)
    wait_for(lambda: "frame head not complete after 2 s" in relay.log(), 5, "the log line")
    wait_for(lambda: _head_timeouts(relay) == 1, 5, "head_timeouts = 1")


def test_steady_frames_with_split_heads_are_not_cut(make_relay) -> None:
    """Each SEND's head arrives in two writes 0.2 s apart, one SEND every 0.3 s, for three
    times head_timeout: each head is quick, so none is cut, and Bob gets every one."""
    relay = _relay(make_relay)
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    count = int(3 * HEAD_TIMEOUT / 0.5) + 1
    tids = []
    for i in range(count):
        tid = new_tid()
        body = b"steady %d" % i
        headers = [("Message-ID", f"m{i}"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        headers.append(("Content-Type", "text/plain"))
        frame = build_request(
            tid, b"SEND", [bob.use_path or "", bob.uri], [alice.uri], headers, body
        )
        alice.send_raw(frame[:20])
        time.sleep(0.2)
        alice.send_raw(frame[20:])
        time.sleep(0.3)
        tids.append(tid)
    assert [alice.recv().frame.code for _ in tids] == [200] * count
    got = [bob.recv() for _ in tids]
    assert [g.frame.tid for g in got] == tids
    assert [g.body for g in got] == [b"steady %d" % i for i in range(count)]
    assert _head_timeouts(relay) == 0
    assert "frame head not complete" not in relay.log()
    alice.close()
    bob.close()


def test_a_slow_streamed_body_is_not_cut(make_relay) -> None:
    """A 3 MiB SEND (over max_body: streamed) whose head arrives at once and whose body takes
    about 2.5 x head_timeout: the head completed, so it is delivered whole."""
    relay = _relay(make_relay)
    alice, bob = _authed(relay.port, "alice"), _authed(relay.port, "bob")
    body = bytes(range(256)) * (3 * 4096)
    _, frame = alice.binary_send(bob, body, "big")
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(bob.recv(timeout=60).body))
    reader.start()
    head_end = frame.index(b"\r\n\r\n") + 4
    alice.send_raw(frame[:head_end])
    rest = frame[head_end:]
    pieces = 50
    step = len(rest) // pieces + 1
    for at in range(0, len(rest), step):
        alice.send_raw(rest[at : at + step])
        time.sleep(2.5 * HEAD_TIMEOUT / pieces)
    reader.join(60)
    assert received == [body]
    assert alice.recv().frame.code == 200
    assert _head_timeouts(relay) == 0
    alice.close()
    bob.close()
