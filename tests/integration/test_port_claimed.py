"""A port something else listens on is refused at start and at reload (process/listeners.py).

SO_REUSEPORT lets a second process of the same user bind a listening port, and the kernel
then splits new connections between the two: without the check, a second relay started on a
running one's port would start "fine" and take part of its clients. Real relays, real
sockets: the second start must fail naming the address, and the first relay must still get
every connection made afterwards.
"""

from __future__ import annotations

import socket

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, wait_for
from .test_relaying import exchange


def _answers(relay: Relay, connections: int) -> None:
    """Every one of `connections` new connections reaches `relay`: each AUTHs (the relay's
    own users) and a message goes through the relay between two of them."""
    clients = [MsrpClient(relay.port) for _ in range(connections)]
    try:
        for client in clients:
            final = client.auth("alice", PASSWORDS["alice"], REALM)
            assert final.frame.code == 200, final.frame.buf
        exchange(clients[0], clients[1], b"still ours")
    finally:
        for client in clients:
            client.close()


def test_second_relay_on_the_same_port_is_refused(make_relay) -> None:  # type: ignore[no-untyped-def]
    first: Relay = make_relay(children=2)
    assert first.start().returncode == 0, first.log()
    second: Relay = make_relay(children=2)
    second.sections["core"]["listen"] = [f"tcp:127.0.0.1:{first.port}"]
    second.write_config()
    result = second.start(repick=False)
    assert result.returncode != 0
    said = result.stderr + second.log()
    assert f"127.0.0.1:{first.port}" in said and "in use by another program" in said, said
    assert second.pid() is None or not second.worker_pids()
    _answers(first, 12)  # had the second bound too, about half would have gone to it


def test_reuseport_listener_of_another_program_is_refused(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=1)
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", relay.port))
        other.listen()
        result = relay.start(repick=False)
        assert result.returncode != 0
        assert "in use by another program" in result.stderr + relay.log()
    assert relay.start().returncode == 0, relay.log()  # free again: starts
    _answers(relay, 2)


def test_reload_to_a_claimed_port_is_refused_and_more_children_are_not(make_relay) -> None:  # type: ignore[no-untyped-def]
    relay: Relay = make_relay(children=1)
    assert relay.start().returncode == 0, relay.log()
    before = relay.worker_pids()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        relay.sections["core"]["listen"] = [
            f"tcp:127.0.0.1:{relay.port}",
            f"tcp:127.0.0.1:{taken}",
        ]
        relay.write_config()
        assert relay.cli("reload").returncode == 0
        wait_for(lambda: "reload refused" in relay.log(), 10, "the reload to be refused")
        refusal = relay.log().split("reload refused", 1)[1]
        assert f"127.0.0.1:{taken}" in refusal and "in use by another program" in refusal
        assert relay.worker_pids() == before  # still the old configuration's generation
    # Our own port with more children: the sockets this relay holds are no conflict.
    relay.sections["core"]["listen"] = [f"tcp:127.0.0.1:{relay.port}"]
    relay.sections["core"]["children"] = 3
    relay.write_config()
    assert relay.cli("reload").returncode == 0
    wait_for(lambda: len(relay.worker_pids() - before) == 3, 15, "the new generation")
    _answers(relay, 6)
