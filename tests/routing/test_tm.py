"""msrp.t_reply and msrp.t_relay (routing/tm.py) over the in-memory env: Failure-Report
decides t_reply (rfc-checklist §2.4), t_relay picks the destination as relay() does."""

from __future__ import annotations

import pytest

from msrpd.protocol import ConnInfo, parse_uri
from msrpd.routing import Destination, Msrp

from .fakeenv import FakeEnv, parse

TA = "msrp://127.0.0.1:2855/ta;tcp"
A = "msrp://127.0.0.1:5000/a;tcp"
B = "msrp://127.0.0.1:6000/b;tcp"


def frame_bytes(method: str, *headers: str, to: str = f"{TA} {B}") -> bytes:
    lines = [f"MSRP t1 {method}", f"To-Path: {to}", f"From-Path: {A}", "Message-ID: m1", *headers]
    return ("".join(line + "\r\n" for line in lines) + "-------t1$\r\n").encode()


def msrp_for(data: bytes, env: FakeEnv) -> Msrp:
    return Msrp(parse(data), ConnInfo("tcp:127.0.0.1:5000", "tcp:127.0.0.1:2855", 1), env)


@pytest.mark.parametrize(
    ("fr", "code", "result"),
    [
        (None, 200, 1),
        ("yes", 200, 1),
        ("yes", 481, 1),
        ("partial", 200, 0),
        ("partial", 204, 0),
        ("partial", 415, 1),
        ("no", 200, 0),
        ("no", 481, 0),
        ("No", 481, 0),
    ],
)
def test_t_reply_obeys_failure_report(fr: str | None, code: int, result: int) -> None:
    env = FakeEnv(None, None)
    headers = [f"Failure-Report: {fr}"] if fr else []
    assert msrp_for(frame_bytes("SEND", *headers), env).t_reply(code, "Why") == result
    replies, _ = env.take()
    if result == 1:
        (reply,) = replies
        assert (reply.tid, reply.code, reply.reason) == (b"t1", code, b"Why")
        assert (reply.to_path, reply.from_path) == ([A], [TA])
    else:
        assert replies == []


def test_t_reply_never_answers_a_report_or_a_response_or_nonsense() -> None:
    env = FakeEnv(None, None)
    assert msrp_for(frame_bytes("REPORT", "Status: 000 200 OK"), env).t_reply(200, "OK") == -1
    response = b"MSRP t1 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------t1$\r\n" % (
        TA.encode(),
        B.encode(),
    )
    assert msrp_for(response, env).t_reply(200, "OK") == -1
    assert msrp_for(frame_bytes("SEND"), env).t_reply("2x0", "OK") == -1
    assert msrp_for(frame_bytes("SEND"), env).t_reply(200, "OK", "Bad\r\nInjected: 1") == -1
    assert env.take() == ([], [])


def test_t_relay_destination() -> None:
    env = FakeEnv(None, None)
    assert msrp_for(frame_bytes("SEND"), env).t_relay() == 1
    chosen = msrp_for(frame_bytes("FOO"), env)
    assert chosen.set_dst("msrp://127.0.0.1:7000;tcp") == 1
    assert chosen.t_relay() == 1
    response = b"MSRP t1 200 OK\r\nTo-Path: %s %s\r\nFrom-Path: %s\r\n-------t1$\r\n" % (
        TA.encode(),
        A.encode(),
        B.encode(),
    )
    assert msrp_for(response, env).t_relay() == 1
    assert msrp_for(frame_bytes("SEND", to=TA), env).t_relay() == -1  # nowhere to go
    dests = [(r.frame.method, r.dest) for r in env.relayed]
    assert dests == [
        (b"SEND", Destination(parse_uri(B))),
        (b"FOO", Destination(parse_uri("msrp://127.0.0.1:7000;tcp"), None, "", chosen=True)),
        (None, Destination(None)),
    ]


@pytest.mark.parametrize(("fr", "result"), [(None, 1), ("partial", 1), ("no", 0)])
def test_t_reply_refuses_a_message_its_next_hop_refused(fr: str | None, result: int) -> None:
    env = FakeEnv(None, None)
    env.refused.add(b"m1")
    headers = [f"Failure-Report: {fr}"] if fr else []
    assert msrp_for(frame_bytes("SEND", *headers), env).t_reply(200, "OK") == result
    assert msrp_for(frame_bytes("SEND", *headers), env).t_reply(481, "Gone") == result
    replies, _ = env.take()
    assert [r.code for r in replies] == [413, 481][: 2 * result]
