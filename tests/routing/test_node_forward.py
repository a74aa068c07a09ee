"""The relay route with a token another node of a cluster holds (routing/hop.py, env.node_of),
through the real Msrp object and an in-memory env: the frame goes to that node's URI with only
its leftmost To-Path URI replaced, whatever URIs follow; never from a node link; a token no
node holds gets the same 481 as before. The same against live nodes:
tests/integration/test_cluster_forward.py."""

from __future__ import annotations

import pytest

from msrpd.config.address import parse_listen
from msrpd.config.selfuri import SelfUris

from .fakeenv import Client, FakeEnv, Relay, request

pytestmark = pytest.mark.usefixtures("both_loaders")  # compiled and exec'd alike

PEER = Client("alice", 40001, conid=1, sock="tls:127.0.0.1:2855")
NODE = Client("node2", 40009, conid=9, sock="tls:127.0.0.1:2855", node=True)
BOB = "msrp://10.0.0.7:5000/bob;tcp"
THERE = "msrps://127.0.0.2:2856/tok2;tcp"
"""Node 2's URI for its token tok2, as the registry names node 2."""
HERE = "msrps://127.0.0.1:2855/tok2;tcp"
"""tok2 addressed to this node (a shared name behind a balancer, a misrouted peer)."""


@pytest.fixture
def relay(env: FakeEnv) -> Relay:
    listen = [parse_listen(f"{proto}:127.0.0.1:2855") for proto in ("tcp", "tls")]
    env.self_uris = SelfUris.build(listen)
    env.nodes["tok2"] = THERE
    return Relay("relay", env)


def _send(relay: Relay, client: Client, to_path: str, method: str = "SEND") -> tuple:
    return relay.feed(client, request(method, relay.tid(), to_path, client.uri))


def test_a_frame_for_another_nodes_token_goes_there_with_its_paths_kept(relay: Relay) -> None:
    replies, relayed = _send(relay, PEER, f"{HERE} {BOB}")
    assert [r.code for r in replies] == [200]
    assert len(relayed) == 1
    dest = relayed[0].dest
    assert dest.node and dest.conid is None and dest.uri is not None
    assert (dest.uri.host, dest.uri.port, dest.uri.secure) == ("127.0.0.2", 2856, True)
    frame = relayed[0].frame
    assert frame.header("To-Path") == f"{THERE} {BOB}".encode()
    assert frame.header("From-Path") == PEER.uri.encode()  # this node is not on the path
    assert bytes(frame.body or b"") == b"hi"


def test_whatever_follows_the_token_the_frame_goes_to_the_node(relay: Relay) -> None:
    """Knowing node 2's token makes node 1 reach node 2's URI for it and nothing else: the
    URI after the token is carried, never dialled here."""
    elsewhere = "msrp://203.0.113.9:2855/evil;tcp"
    _, relayed = _send(relay, PEER, f"{HERE} {elsewhere}")
    assert len(relayed) == 1
    assert relayed[0].dest.uri is not None and relayed[0].dest.uri.raw == THERE


def test_reports_and_other_methods_go_unanswered_to_the_node(relay: Relay) -> None:
    for method in ("REPORT", "NICKNAME"):
        replies, relayed = _send(relay, PEER, f"{HERE} {BOB}", method)
        assert replies == [] and len(relayed) == 1 and relayed[0].dest.node


def test_a_frame_from_a_node_link_is_never_sent_to_another_node(relay: Relay) -> None:
    """A stale directory pointing back must not loop: 481, as for a token nobody holds."""
    replies, relayed = _send(relay, NODE, f"{HERE} {BOB}")
    assert ([r.code for r in replies], relayed) == ([481], [])


def test_a_token_no_node_holds_gets_the_same_481(relay: Relay) -> None:
    replies, relayed = _send(relay, PEER, f"msrps://127.0.0.1:2855/nosuch;tcp {BOB}")
    assert ([r.code for r in replies], relayed) == ([481], [])


def test_a_token_of_this_node_is_not_asked_about(relay: Relay, env: FakeEnv) -> None:
    """The cmap answers first: a node's own token never goes to the directory."""
    token = relay.session(PEER)
    env.nodes[token.rsplit("/", 1)[1].split(";")[0]] = THERE
    _, relayed = _send(relay, NODE, f"{token} {BOB}")
    assert len(relayed) == 1 and relayed[0].dest.conid == PEER.conid
    assert not relayed[0].dest.node
