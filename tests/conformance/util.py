"""What the conformance tests share: sending a SEND, showing that nothing more arrives,
finding which worker holds a connection."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..integration.relay import Relay
from ..msrpclient import MsrpClient, Received
from .peer import QUIET


def send(
    client: MsrpClient,
    to_path: str,
    body: bytes | None = b"hello",
    *,
    mid: str = "m1",
    fr: str | None = None,
    method: str = "SEND",
    tid: bytes | None = None,
) -> bytes:
    """A one-chunk request from `client`; its transaction id."""
    headers = [("Message-ID", mid)]
    if fr is not None:
        headers.append(("Failure-Report", fr))
    if body is not None:
        headers += [("Byte-Range", f"1-{len(body)}/{len(body)}"), ("Content-Type", "text/plain")]
    return client.request(method, to_path, headers, body, tid)


def nothing_more(*clients: MsrpClient, wait: float = QUIET) -> None:
    """No frame reaches any of `clients` within `wait` seconds (and none is closed)."""
    for client in clients:
        with pytest.raises(TimeoutError):
            got = client.recv(wait)
            raise AssertionError(f"unexpected frame: {bytes(got.frame.buf)!r}")


def closed(client: MsrpClient, wait: float = 5.0) -> bool:
    """The relay closes `client`'s connection within `wait` seconds, sending nothing first."""
    try:
        got = client.recv(wait)
    except EOFError:
        return True
    except (TimeoutError, ConnectionResetError):
        return False
    raise AssertionError(f"a frame instead of a close: {bytes(got.frame.buf)!r}")


def answer_of(client: MsrpClient, tid: bytes) -> Received:
    """The next frame on `client`, which must be the response to `tid`."""
    got = client.recv()
    assert got.frame.tid == tid and got.frame.code is not None, got.frame.buf
    return got


def worker_of(relay: Relay, client: MsrpClient) -> int:
    port = client.sock.getsockname()[1]
    for proc in relay.workers():
        if any(c.raddr and c.raddr.port == port for c in proc.net_connections("tcp")):
            return proc.pid
    raise AssertionError(f"no worker holds the connection from port {port}")


def on_other_worker(
    relay: Relay, first: MsrpClient, connect: Callable[[], MsrpClient]
) -> MsrpClient:
    """A connection from `connect()` that a different worker than `first`'s holds (the
    kernel picks the worker: connect until it picks another)."""
    for _ in range(30):
        client = connect()
        if worker_of(relay, client) != worker_of(relay, first):
            return client
        client.close()
    raise AssertionError("the kernel never put a connection on the other worker")
