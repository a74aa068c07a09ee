"""The other side of a relay hop in conformance tests: a listening MSRP peer without a relay
(checklist "B"), and a trap that only records whether anyone connected to it.

Both are real sockets on 127.0.0.1. The peer reads frames with the project's FrameReader and
answers what it is asked to; the trap never reads: the tests only ask whether the relay ever
opened a connection to it.
"""

from __future__ import annotations

import socket
from typing import Self

from msrpd.protocol.writer import build_reply

from ..msrpclient import MsrpClient, Received

QUIET = 1.0
"""Seconds a test waits to show that nothing (more) arrives."""


class Listener:
    """A listening socket on 127.0.0.1; `uri` names it with `session`."""

    def __init__(self, session: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.uri = f"msrp://127.0.0.1:{self.port}/{session};tcp"

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connected(self, wait: float = QUIET) -> bool:
        """Whether anyone connects within `wait` seconds (the connection is closed at once)."""
        self.sock.settimeout(wait)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True


class Peer(Listener):
    """B: accepts the relay's connection and reads what it sends, as an MsrpClient."""

    def __init__(self, session: str = "kb") -> None:
        super().__init__(session)
        self.conn: MsrpClient | None = None

    def accept(self, timeout: float = 5.0) -> MsrpClient:
        if self.conn is None:
            self.sock.settimeout(timeout)
            sock, (host, port) = self.sock.accept()
            client = MsrpClient(port, host, sock=sock)
            client.uri = self.uri
            self.conn = client
        return self.conn

    def recv(self, timeout: float = 5.0, answer: int | None = 200) -> Received:
        """The next frame the relay sends us; a request is answered `answer` (None: not)."""
        got = self.accept(timeout).recv(timeout)
        if answer is not None and got.frame.method not in (None, b"REPORT"):
            self.accept().send_raw(build_reply(got.frame, answer, "OK" if answer == 200 else "No"))
        return got

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        super().close()
