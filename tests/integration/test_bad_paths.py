"""A frame whose To-Path or From-Path does not parse, sent to a live relay (issue 12 item 8).

Before the fix the route ran on it: `split_path` raised inside `auth.check` through
`frame.to_path`, the AUTH got `500 Server Error (route failed)` and the log a traceback
(without the Authorization header it got 401). Now the reader refuses it before any route
runs: a request is answered 400 (checklist §2.1 step 1), a REPORT, a response or a request with
Failure-Report: no gets nothing (RFC 4975 §7.1.2, §7.1.4, §7.2), each is logged and counted,
and the connection goes on.
"""

from __future__ import annotations

import select
import time

from msrpd.rundir import layout_for
from msrpd.shm import ShmSet

from ..msrpclient import MsrpClient
from .relay import Relay, wait_for
from .test_balance import COUNTERS_PUBLISHED

AUTHORIZATION = (
    b'Authorization: Digest username="bob", realm="myrealm", nonce="abc", uri="x", response="0"\r\n'
)


def reproduction(port: int, authorization: bool) -> bytes:
    """The frame of the issue, with or without its Authorization header."""
    return (
        b"MSRP a1b2c3d5 AUTH\r\n"
        b"To-Path: msrp://127.0.0.1:%d;\xf4cp\r\n"
        b"From-Path: msrp://127.0.0.1:9/fz;tcp\r\n"
        b"%s-------a1b2c3d5$\r\n"
    ) % (port, AUTHORIZATION if authorization else b"")


def _silent(port: int, tid: bytes, first_line_rest: bytes, extra: bytes = b"") -> bytes:
    """A frame with a bad To-Path that must get no answer."""
    return (
        b"MSRP %s %s\r\nTo-Path: msrp://127.0.0.1:%d/s;tcp msrp://h:1/\xff;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:9/fz;tcp\r\nMessage-ID: m1\r\n%s-------%s$\r\n"
    ) % (tid, first_line_rest, port, extra, tid)


def _invalid_frames(shm: ShmSet) -> int:
    return int(shm.stats.total()["invalid_frames"])


def _probe(client: MsrpClient) -> None:
    """The connection still works, and nothing else was waiting before the probe's answer."""
    tid = client.request("AUTH", client.relay_uri)
    answer = client.recv(timeout=10).frame
    assert (answer.tid, answer.code) == (tid, 401), answer.buf


def test_frames_with_bad_paths_are_refused_before_the_route(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=2)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    shm = layout_for(relay.settings()).attach_all()
    try:
        with MsrpClient(relay.port) as client:
            for authorization in (True, False):
                client.send_raw(reproduction(relay.port, authorization))
                answer = client.recv(timeout=10).frame
                assert (answer.tid, answer.code) == (b"a1b2c3d5", 400), answer.buf
                assert answer.reason == b"Bad Request (To-Path is not a list of MSRP URIs)"
                assert answer.to_path == ["msrp://127.0.0.1:9/fz;tcp"]
                # In place of the To-Path URI that does not parse: the relay's, as reached.
                assert answer.from_path == [f"msrp://127.0.0.1:{relay.port};tcp"]
            # Never answered, and the connection goes on.
            client.send_raw(_silent(relay.port, b"rep1", b"REPORT", b"Status: 000 200 OK\r\n"))
            client.send_raw(_silent(relay.port, b"frn1", b"SEND", b"Failure-Report: no\r\n"))
            client.send_raw(_silent(relay.port, b"rsp1", b"200 OK"))
            _probe(client)
        wait_for(lambda: _invalid_frames(shm) == 5, timeout=COUNTERS_PUBLISHED * 4)
    finally:
        shm.close()
    log = relay.log()
    assert "Traceback" not in log and "route failed" not in log, log[-3000:]
    for tid in ("a1b2c3d5", "rep1", "frn1", "rsp1"):
        assert f"invalid frame b'{tid}' from " in log, tid


def test_streamed_frame_with_a_bad_path_is_answered_after_the_whole_chunk(make_relay) -> None:  # type: ignore[no-untyped-def]
    """Written the way msrplib writes (the whole chunk, then read): the 400 is not there
    before the end-line, and comes after it."""
    relay: Relay = make_relay(children=1)
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    body = b"x" * (2 << 20)  # over max_body: the relay skips it as it comes
    head = (
        b"MSRP big1 SEND\r\nTo-Path: msrp://127.0.0.1:%d/s;\xf4cp msrp://h:1/b;tcp\r\n"
        b"From-Path: msrp://127.0.0.1:9/fz;tcp\r\nMessage-ID: m1\r\nByte-Range: 1-*/*\r\n"
        b"Content-Type: text/plain\r\n\r\n"
    ) % relay.port
    with MsrpClient(relay.port) as client:
        client.send_raw(head + body + b"\r\n")
        time.sleep(0.5)  # the relay has read what the socket buffers let through
        readable, _, _ = select.select([client.sock], [], [], 0)
        assert not readable, "the 400 came before the end-line"
        client.send_raw(b"-------big1$\r\n")
        answer = client.recv(timeout=10).frame
        assert (answer.tid, answer.code) == (b"big1", 400), answer.buf
        _probe(client)
