"""Review reproducers (h-review) for process/listeners.py's check_unclaimed (5691f23).

A reload binds the new configuration's sockets (ListenerSet.ensure) before it closes the old
ones (prune, after the new generation is spawned). The probe without SO_REUSEPORT therefore
collides with this relay's OWN listener whenever the new config names a host:port the old one
listened on under another ListenAddress (another proto, or an overlapping host): the reload
is refused with "in use by another program (another relay?)". Before 5691f23 both reloads
below succeeded (SO_REUSEPORT shared the port with our old socket until prune closed it).
These tests fail on aa1afcd.
"""

from __future__ import annotations

import socket

import pytest

from msrpd.config.address import ListenAddress
from msrpd.process.listeners import ListenerSet


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (("tcp", "127.0.0.1"), ("ws", "127.0.0.1")),  # the port changes protocol
        (("tcp", "0.0.0.0"), ("tcp", "127.0.0.1")),  # the wildcard narrowed to one address
    ],
)
def test_reload_onto_a_port_this_relay_itself_holds_is_not_refused(
    old: tuple[str, str], new: tuple[str, str]
) -> None:
    port = _port()
    listeners = ListenerSet()
    try:
        listeners.ensure((ListenAddress(old[0], old[1], port),), 2, 16)  # type: ignore[arg-type]
        # The reload: ensure() the new listen list first, prune() the old afterwards.
        listeners.ensure((ListenAddress(new[0], new[1], port),), 2, 16)  # type: ignore[arg-type]
    finally:
        listeners.close()
