"""ListenerSet at a reload (process/listeners.py): the new configuration's sockets are bound
(ensure) before the old ones close (prune, once the new generation runs). A port the relay
already listens on, under another entry (another protocol, or a wildcard narrowed to one
address), is its own: never refused as another program's. Real sockets.
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
