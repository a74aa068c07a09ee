"""msrp.forward (Kamailio 6.0's msrp_forward) through the real Msrp object."""

from __future__ import annotations

from msrpd.routing import Msrp

from .fakeenv import Client, FakeEnv, parse, request

ALICE = Client("alice", 40001, conid=0x1001)


def test_forward_sends_new_paths_to_the_first_new_hop(env: FakeEnv) -> None:
    frame = parse(request("SEND", "f1", "msrp://127.0.0.1:2855/s;tcp", ALICE.uri))
    msrp = Msrp(frame, ALICE.conn, env)
    assert (
        msrp.forward("msrp://10.0.0.9:2855/x;tcp", "msrp://127.0.0.1:2855/s;tcp " + ALICE.uri) == 1
    )
    _, relayed = env.take()
    (out,) = relayed
    sent = parse(out.data)
    assert sent.to_path == ["msrp://10.0.0.9:2855/x;tcp"]
    assert sent.from_path == ["msrp://127.0.0.1:2855/s;tcp", ALICE.uri]
    assert out.dest.uri is not None and out.dest.uri.address() == ("10.0.0.9", 2855)
    assert bytes(sent.body or b"") == b"hi"


def test_forward_refuses_a_path_that_would_break_the_frame(env: FakeEnv) -> None:
    frame = parse(request("SEND", "f2", "msrp://127.0.0.1:2855/s;tcp", ALICE.uri))
    assert Msrp(frame, ALICE.conn, env).forward("a\r\nX: y") == -1
    assert env.take() == ([], [])
