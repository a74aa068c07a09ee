"""connect_socket (workers/tcpdial.py): the dialler's connect, with no protocol attached, so
its deadline can only fire before the connection exists. Real sockets on 127.0.0.1, on
uvloop and asyncio."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import pytest

from msrpd.workers.tcpdial import connect_socket

from .hubs import LOOPS, run


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: a connect to it hangs (its SYNs are dropped)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers = []
    for _ in range(3):  # one completes into the queue, the others wait in SYN_SENT
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(srv.getsockname())
        fillers.append(filler)
    try:
        yield srv.getsockname()[1]
    finally:
        for sock in (srv, *fillers):
            sock.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_connected_socket_with_nodelay(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        accepted: list[asyncio.BaseTransport] = []

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.append(transport)

        server = await loop.create_server(Accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = await connect_socket(loop, "localhost", port)
        assert sock.getpeername()[1] == port
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
        transport.write(b"x")
        while not accepted:
            await asyncio.sleep(0.01)
        transport.close()
        accepted[0].close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_refused_connect_raises_and_leaves_no_socket(loop_kind: str) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

        async def main() -> None:
            before = _fds()
            with pytest.raises(ConnectionRefusedError):
                await connect_socket(asyncio.get_running_loop(), "127.0.0.1", port)
            assert _fds() == before

        run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_the_deadline_during_a_hanging_connect_leaves_no_socket(
    loop_kind: str, full_listener: int
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = _fds()
        began = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await connect_socket(loop, "127.0.0.1", full_listener)
        assert 0.25 < loop.time() - began < 3
        await asyncio.sleep(0)  # uvloop closes a cancelled connect's handle a step later
        assert _fds() == before

    run(loop_kind, main)
