"""Tokens and direction (rfc-checklist §2.1 steps 2-4, §5.1-§5.3; §6 cases 19-22, 27 a/b/d),
and issue 14's open-relay probe, redirect attempt and token from a second connection.

Each test runs against the live relay of conftest.py: A holds a token TA over TLS; B is a
peer without a relay, either connecting to the relay (plain TCP) or listening for it (Peer);
a Listener "trap" stands for a host the relay must never connect to.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient
from .conftest import Net, start_relay
from .peer import Listener, Peer
from .util import answer_of, closed, nothing_more, on_other_worker, send


@pytest.fixture
def trap() -> Iterator[Listener]:
    listener = Listener("victim")
    yield listener
    listener.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    b = Peer()
    yield b
    b.close()


def _b_on_other_worker(net: Net, a: MsrpClient) -> MsrpClient:
    """B connected over plain TCP, held by another worker than A's connection."""

    def connect() -> MsrpClient:
        b = net.plain()
        # One round trip, so that balancing at accept is over before we look (403: a
        # request to the bare URI has nothing to be forwarded from).
        tid = send(b, f"msrp://127.0.0.1:{net.port};tcp {b.uri}")
        assert answer_of(b, tid).frame.code == 403
        return b

    return on_other_worker(net.relay, a, connect)


def _check_inbound(got_frame: object, a: MsrpClient, b_uri: str, token: str) -> None:
    frame = got_frame
    assert frame.to_path == [a.uri]  # type: ignore[attr-defined]
    assert frame.from_path == [token, b_uri]  # type: ignore[attr-defined]


def test_open_relay_probe_is_not_forwarded_and_nothing_is_dialled(net: Net, trap: Listener) -> None:
    """Issue 14's probe from an unauthenticated client: a made-up session on our URI, then a
    victim address: 481 (an unknown token), and the relay never connects to the victim."""
    with net.plain() as mallory:
        to_path = f"msrp://127.0.0.1:{net.port}/anything;tcp {trap.uri} msrp://example.com:1/z;tcp"
        tid = send(mallory, to_path, b"GET / HTTP/1.0\r\n\r\n")
        got = answer_of(mallory, tid)
        assert got.frame.code == 481
        assert not trap.connected()
        nothing_more(mallory)


def test_case22a_a_request_not_addressed_to_us_closes_the_connection(
    net: Net, trap: Listener
) -> None:
    """Case 22(a): leftmost To-Path is another host: not forwarded, the client is closed
    (policy §8.1), nothing is answered."""
    with net.authed() as a:
        send(a, f"{trap.uri} msrp://example.com:7000/kb;tcp")
        assert closed(a)
        assert not trap.connected()


def test_case22b_our_bare_uri_is_nothing_to_forward_from(net: Net, peer: Peer) -> None:
    """Case 22(b): `To-Path: <our bare URI> b`: 403 (policy), not forwarded."""
    with net.authed() as a:
        tid = send(a, f"{net.bare} {peer.uri}")
        assert answer_of(a, tid).frame.code == 403
        assert not peer.connected()
        nothing_more(a)


def test_case20_outbound_goes_to_the_next_hop_not_back_to_the_sender(net: Net, peer: Peer) -> None:
    """Case 20: A (with a relay) to B (without): `To-Path: TA b` on A's own connection is
    outbound by the arrival connection, whatever the hop count: B gets it, A only its 200."""
    with net.authed() as a:
        assert a.use_path
        tid = send(a, f"{a.use_path} {peer.uri}", b"to bob", mid="dir-1")
        ok = answer_of(a, tid)
        assert ok.frame.code == 200
        assert ok.frame.to_path == [a.uri] and ok.frame.from_path == [a.use_path]
        got = peer.recv()
        assert got.frame.method == b"SEND" and got.body == b"to bob"
        assert got.frame.to_path == [peer.uri]
        assert got.frame.from_path == [a.use_path, a.uri]
        assert got.frame.message_id == b"dir-1"
        nothing_more(a, peer.accept())


def test_case19_inbound_goes_over_the_owners_connection_only(net: Net, trap: Listener) -> None:
    """Case 19: B, on another worker, sends `To-Path: TA a`: 200 to B; A gets it over its own
    connection (To-Path a, From-Path TA b); the relay never dials A's URI (here a trap)."""
    with net.authed() as a:
        assert a.use_path
        a.uri = trap.uri  # A's From-Path URI names a host the relay must never dial
        with _b_on_other_worker(net, a) as b:
            tid = send(b, f"{a.use_path} {a.uri}", b"to alice", mid="in-1")
            assert answer_of(b, tid).frame.code == 200
            got = a.recv()
            assert got.frame.method == b"SEND" and got.body == b"to alice"
            _check_inbound(got.frame, a, b.uri, a.use_path)
            assert not trap.connected()
            nothing_more(a, b)


def test_redirect_attempt_is_delivered_to_the_owner_only(net: Net, trap: Listener) -> None:
    """A valid token followed by another host: inbound on A's token, so it goes to A's
    connection (with the To-Path it carried) and the relay connects to nothing."""
    with net.authed() as a, net.plain() as mallory:
        assert a.use_path
        tid = send(mallory, f"{a.use_path} {trap.uri}", b"redirected?", mid="redir")
        assert answer_of(mallory, tid).frame.code == 200
        got = a.recv()
        assert got.body == b"redirected?"
        assert got.frame.to_path == [trap.uri]
        assert got.frame.from_path == [a.use_path, mallory.uri]
        assert not trap.connected()
        nothing_more(a, mallory)


def test_token_from_a_second_connection_goes_to_its_owner_never_onwards(
    net: Net, peer: Peer
) -> None:
    """A's token used from a second connection (here Alice herself, authenticated again on
    another worker): it is inbound there, so `To-Path: TA b` is delivered back to A's first
    connection, and B, the next URI, is never contacted. Outbound use is the owner's only."""
    with net.authed() as a:
        assert a.use_path
        second = on_other_worker(net.relay, a, net.authed)
        with second:
            tid = send(second, f"{a.use_path} {peer.uri}", b"not from the owner", mid="x2")
            assert answer_of(second, tid).frame.code == 200
            got = a.recv()
            assert got.body == b"not from the owner"
            assert got.frame.to_path == [peer.uri]
            assert got.frame.from_path == [a.use_path, second.uri]
            assert not peer.connected()
            nothing_more(a, second)


@pytest.mark.parametrize("fr", ["yes", "no"])
def test_case21_bad_tokens_are_refused_alike(net: Net, fr: str) -> None:
    """Case 21: (a) a token never issued, (b) an expired one, (c) A's token after A's
    connection closed and A reconnected: never forwarded; FR=yes: the same 481 for all
    three (nothing in it tells them apart); FR=no: nothing."""
    stale = net.authed("alice")
    assert stale.use_path
    gone_token = stale.use_path
    stale.close()
    expiring = net.authed("bob", expires=1)
    assert expiring.use_path
    a = net.authed("alice")  # A again, on a new connection
    assert a.use_path
    sid_prefix = a.use_path.rsplit("/", 1)[0]
    cases = {
        "never issued": f"{sid_prefix}/AAAAAAAAAAAAAAAA;tcp",
        "expired": expiring.use_path,
        "connection gone": gone_token,
    }
    time.sleep(1.5)  # bob's token (Expires: 1) has expired
    with net.plain() as b, expiring, a:
        answers = []
        for name, token in cases.items():
            tid = send(b, f"{token} {a.uri}", b"x", mid=name.replace(" ", "-"), fr=fr)
            if fr == "no":
                continue
            got = answer_of(b, tid)
            answers.append(
                bytes(got.frame.buf)
                .replace(tid, b"TID")
                .replace(token.encode(), b"TOKEN")
                .replace(name.replace(" ", "-").encode(), b"MID")
            )
        if fr == "yes":
            assert answers[0].startswith(b"MSRP TID 481 ")
            assert answers[0] == answers[1] == answers[2], answers
        nothing_more(b, a, expiring)


def test_an_expired_token_leaves_the_cmap_when_refused(net: Net) -> None:
    """RFC 4976 §6.3, issue 14 item 2: the refused expired token's cmap entry is deleted
    then (the periodic sweep runs only every 60 s), and stays refused."""
    shm = layout_for(net.relay.settings()).attach_all()
    try:
        cmap = shm.cmap
        assert cmap is not None
        with net.authed("bob", expires=1) as bob, net.plain() as b:
            assert bob.use_path
            sid = bob.use_path.rsplit("/", 1)[1].split(";")[0]
            assert cmap.lookup(sid, float("-inf")) is not None
            time.sleep(1.5)
            assert cmap.lookup(sid, float("-inf")) is not None  # not swept yet
            tid = send(b, f"{bob.use_path} {bob.uri}")
            assert answer_of(b, tid).frame.code == 481
            assert cmap.lookup(sid, float("-inf")) is None
            nothing_more(bob)
    finally:
        shm.close()


def test_case27a_a_report_is_delivered_inbound_and_never_answered(net: Net) -> None:
    """Case 27(a): B's REPORT `To-Path: TA a` reaches A on its connection, To-Path a,
    From-Path TA b; nobody answers it."""
    with net.authed() as a:
        assert a.use_path
        with _b_on_other_worker(net, a) as b:
            headers = [("Message-ID", "r-1"), ("Byte-Range", "1-5/5"), ("Status", "000 200 OK")]
            b.request("REPORT", f"{a.use_path} {a.uri}", headers)
            got = a.recv()
            assert got.frame.method == b"REPORT"
            _check_inbound(got.frame, a, b.uri, a.use_path)
            assert got.frame.header("Status") == b"000 200 OK"
            nothing_more(a, b)


def test_case27b_a_report_for_a_gone_connection_is_dropped_silently(net: Net) -> None:
    """Case 27(b): the same REPORT after A's connection closed: dropped, no answer."""
    a = net.authed()
    assert a.use_path
    a.close()
    time.sleep(0.3)  # the close reaches the relay and removes A's token
    with net.plain() as b:
        headers = [("Message-ID", "r-2"), ("Status", "000 200 OK")]
        b.request("REPORT", f"{a.use_path} {a.uri}", headers)
        nothing_more(b)


def test_case27d_blocked_unknown_methods_get_501(tmp_path: Path) -> None:
    """Case 27(d): with `block_unknown_methods`, FOO through a valid token gets 501 and is
    not forwarded; SEND still goes through."""
    blocking = start_relay(tmp_path, block_unknown_methods=True)
    try:
        with blocking.authed() as a, blocking.plain() as b:
            assert a.use_path
            tid = send(b, f"{a.use_path} {a.uri}", None, method="FOO")
            assert answer_of(b, tid).frame.code == 501
            tid = send(b, f"{a.use_path} {a.uri}", b"still fine")
            assert answer_of(b, tid).frame.code == 200
            assert a.recv().body == b"still fine"
            nothing_more(a, b)
    finally:
        blocking.relay.stop()


def test_unknown_methods_are_forwarded_without_a_relay_answer(net: Net) -> None:
    """RFC 4976 §6.4.2 (block_unknown_methods unset): FOO through A's token reaches A with
    its paths rotated; the relay answers nothing itself (the transaction details, new id
    and the mapped-back response, are case 27(c): test_transactions.py)."""
    with net.authed() as a, net.plain() as b:
        assert a.use_path
        send(b, f"{a.use_path} {a.uri}", None, method="FOO", mid="foo-1")
        got = a.recv()
        assert got.frame.method == b"FOO"
        _check_inbound(got.frame, a, b.uri, a.use_path)
        nothing_more(b)


def test_both_ends_here_are_joined_inside_the_relay(net: Net, trap: Listener) -> None:
    """Issue 14: `To-Path: TA TB b` with both tokens ours (A and B on different workers):
    outbound on TA, then TB is us, so the relay routes it again inside itself (no connection
    to its own Use-Path), where it is inbound on TB: B's connection gets it, A one 200."""
    with net.authed("alice") as a:
        b = on_other_worker(net.relay, a, lambda: net.authed("bob"))
        with b:
            assert a.use_path and b.use_path
            b.uri = trap.uri  # B's own URI must never be dialled either
            tid = send(a, f"{a.use_path} {b.use_path} {b.uri}", b"via both", mid="both")
            ok = answer_of(a, tid)
            assert ok.frame.code == 200 and ok.frame.from_path == [a.use_path]
            got = b.recv()
            assert got.body == b"via both"
            assert got.frame.to_path == [trap.uri]
            assert got.frame.from_path == [b.use_path, a.use_path, a.uri]
            assert not trap.connected()
            nothing_more(a, b)
