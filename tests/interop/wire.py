"""Client side of the interop runs: named TCP connections driven by one selector loop.

Strategy: no threads. Every socket is non-blocking and `Wire.pump()` writes what is pending
and reads whatever arrives on every connection until a condition holds and the line has been
quiet for a while, or a deadline passes - so a relay that streams a 1 MiB frame to Bob while
Alice is still writing it cannot deadlock the test. Received bytes are cut into items: an
MSRP frame (first line up to its end-line, wherever that end-line sits), a SIP message (head
plus Content-Length), a bare CRLF; what cannot be framed is flushed as it is at EOF. A peer
close (FIN or RST, on read or on write) is the item "<EOF>"; an accepted connection on a
listener starts with "<ACCEPT>". Items are latin-1 text: one code point per byte, as in the
golden files.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import time
from collections.abc import Callable

from msrpd.protocol.sip import sip_message_end

__all__ = ["ACCEPT", "EOF", "Conn", "Wire"]

EOF = "<EOF>"
ACCEPT = "<ACCEPT>"
_MSRP_FIRST = re.compile(rb"MSRP ([^ \r\n]+)")
_PREFIXES = (b"MSRP ", b"SIP/2.0 ", b"\r\n")


def _take_item(buf: bytearray) -> bytes | None:
    """Cut the first complete item off `buf`, or None while it is incomplete."""
    if buf.startswith(b"\r\n"):
        item = bytes(buf[:2])
    elif (m := _MSRP_FIRST.match(buf)) is not None:
        mark = b"-------" + m[1]
        pos = buf.find(mark, m.end())
        while pos >= 0:
            end = pos + len(mark)
            if len(buf) < end + 3:
                return None
            if buf[end] in b"$+#" and buf[end + 1 : end + 3] == b"\r\n":
                item = bytes(buf[: end + 3])
                break
            pos = buf.find(mark, end)
        else:
            return None
    elif buf.startswith(b"SIP/2.0 "):
        end, _ = sip_message_end(buf, 0)
        if end < 0:
            return None
        item = bytes(buf[:end])
    else:
        return None
    del buf[: len(item)]
    return item


class Conn:
    def __init__(self, name: str, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.name = name
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        self.out = bytearray()
        self.buf = bytearray()
        self.items: list[str] = []
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        while (item := _take_item(self.buf)) is not None:
            self.items.append(item.decode("latin-1"))

    def flush(self) -> None:
        """Whatever could not be framed becomes one item as it is."""
        if self.buf:
            self.items.append(bytes(self.buf).decode("latin-1"))
            self.buf.clear()


class Wire:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.conns: dict[str, Conn] = {}
        self.last_activity = time.monotonic()

    def connect(self, name: str, port: int) -> Conn:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn = Conn(name, sock)
        self.conns[name] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)
        return conn

    def listen(self, name: str) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, name)
        return int(sock.getsockname()[1])

    def send(self, name: str, data: bytes) -> None:
        conn = self.conns[name]
        conn.out += data
        self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _accept(self, listener: socket.socket, name: str) -> None:
        sock, _ = listener.accept()
        n = 2
        label = name
        while label in self.conns:
            label, n = f"{name}#{n}", n + 1
        conn = Conn(label, sock)
        conn.items.append(ACCEPT)
        self.conns[label] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _peer_closed(self, conn: Conn) -> None:
        conn.flush()
        conn.items.append(EOF)
        conn.closed = True
        conn.out.clear()
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._peer_closed(conn)
            return
        conn.feed(data)

    def _write(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError:
            self._read(conn)  # take what the peer said before it went away
            if not conn.closed:
                self._peer_closed(conn)
            return
        del conn.out[:sent]
        if not conn.out:
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)

    def pump(self, until: Callable[[], bool], timeout: float, quiet: float) -> bool:
        """Run the connections until `until()` holds and nothing arrived for `quiet` seconds.

        Returns False when `timeout` passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            for key, mask in self.sel.select(timeout=0.01):
                self.last_activity = time.monotonic()
                if isinstance(key.data, str):
                    self._accept(key.fileobj, key.data)  # type: ignore[arg-type]
                    continue
                conn: Conn = key.data
                if mask & selectors.EVENT_READ:
                    self._read(conn)
                if mask & selectors.EVENT_WRITE and not conn.closed:
                    self._write(conn)
            now = time.monotonic()
            writing = any(c.out for c in self.conns.values() if not c.closed)
            if not writing and until() and now - self.last_activity >= quiet:
                return True
            if now >= deadline:
                return False

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()
