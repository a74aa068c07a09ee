"""A small blocking MSRP client for tests: real sockets, the project's own frame reader.

It plays Alice and Bob in integration tests: connect (TCP or TLS), AUTH with digest against
the relay, SEND, and read frames with a timeout. Nothing here is clever on purpose.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import ssl
import time
from dataclasses import dataclass

from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits
from msrpd.protocol import digest as dg
from msrpd.protocol.writer import build_request

_TIDS = itertools.count(1)


def new_tid() -> bytes:
    return b"t%x%x" % (os.getpid(), next(_TIDS))


@dataclass
class Received:
    frame: Frame
    body: bytes


class MsrpClient:
    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        sock: socket.socket | None = None,
        source: str | None = None,
    ) -> None:
        """Connect to host:port (from address `source`, another loopback address say), or
        with `sock` use that connected socket (one a test's listening peer accepted from the
        relay)."""
        if sock is None:
            bind = None if source is None else (source, 0)
            sock = socket.create_connection((host, port), timeout=timeout, source_address=bind)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.timeout = timeout
        self.reader = FrameReader(ReaderLimits(max_body=64 << 20))
        self.pending: list[Received] = []
        lhost, lport = sock.getsockname()[:2]
        self.scheme = "msrps" if tls else "msrp"
        # An IPv6 address goes in brackets (RFC 3986 §3.2.2): the relay refuses a path
        # that is not a list of MSRP URIs.
        lhost, rhost = (f"[{h}]" if ":" in h else h for h in (lhost, host))
        self.uri = f"{self.scheme}://{lhost}:{lport}/c{lport};tcp"
        self.relay_uri = f"{self.scheme}://{rhost}:{port};tcp"
        self.use_path: str | None = None
        self.bytes_sent = self.bytes_received = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MsrpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.bytes_sent += len(data)

    def recv(self, timeout: float | None = None) -> Received:
        """The next whole frame; raises TimeoutError, or EOFError when the relay closed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        body = bytearray()
        head: Frame | None = None
        while True:
            for event in self.reader.events():
                if isinstance(event, Frame):
                    if not event.streamed:
                        return Received(event, bytes(event.body or b""))
                    head = event
                elif isinstance(event, BodyPiece):
                    body += event.data
                elif isinstance(event, FrameEnd) and head is not None:
                    return Received(head, bytes(body))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the relay")
            self.sock.settimeout(left)
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the relay closed the connection")
            self.bytes_received += len(data)
            self.reader.receive_data(data)

    def request(
        self,
        method: str,
        to_path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        tid: bytes | None = None,
    ) -> bytes:
        tid = tid or new_tid()
        frame = build_request(tid, method.encode(), to_path.split(), [self.uri], headers, body)
        self.send_raw(frame)
        return tid

    def auth(self, user: str, password: str, realm: str, expires: int | None = None) -> Received:
        """AUTH (401, then digest): the final response; sets `use_path` on 200."""
        extra = [("Expires", str(expires))] if expires is not None else []
        self.request("AUTH", self.relay_uri, extra)
        first = self.recv()
        assert first.frame.code == 401, first.frame.buf
        challenge = (first.frame.header("WWW-Authenticate") or b"").decode()
        match = re.search(r'nonce="([^"]+)"', challenge)
        assert match, challenge
        nonce = match[1]
        cnonce, nc = "0a4f113b", "00000001"
        creds = dg.Credentials(user, realm, nonce, self.relay_uri, "", "auth", nc, cnonce)
        response = dg.response_for(creds, dg.ha1(user, realm, password), "AUTH")
        value = (
            f'Digest username="{user}", realm="{realm}", nonce="{nonce}", '
            f'uri="{self.relay_uri}", response="{response}", qop=auth, nc={nc}, '
            f'cnonce="{cnonce}"'
        )
        self.request("AUTH", self.relay_uri, [("Authorization", value), *extra])
        final = self.recv()
        if final.frame.code == 200:
            self.use_path = (final.frame.header("Use-Path") or b"").decode()
        return final

    def binary_send(self, to: MsrpClient, body: bytes, message_id: str) -> tuple[bytes, bytes]:
        """(tid, the whole SEND frame) of a binary message to `to`, not sent: for tests that
        write it in pieces (a streamed body arriving slowly, a stop in the middle of it)."""
        tid = new_tid()
        headers = [("Message-ID", message_id), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
        headers.append(("Content-Type", "application/octet-stream"))
        paths = [to.use_path or "", to.uri]
        return tid, build_request(tid, b"SEND", paths, [self.uri], headers, body)

    def send_message(self, to: MsrpClient, body: bytes, message_id: str = "m1") -> bytes:
        """SEND through the relay to `to` (whose use_path names its session)."""
        assert to.use_path
        headers = [
            ("Message-ID", message_id),
            ("Byte-Range", f"1-{len(body)}/{len(body)}"),
            ("Content-Type", "text/plain"),
        ]
        return self.request("SEND", f"{to.use_path} {to.uri}", headers, body)
