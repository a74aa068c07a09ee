"""TlsStream: TLS run by the relay itself, over ssl.SSLObject and memory BIOs, on the loop's
plain TCP transport; to the connection above it, it is that connection's transport.

Why not the loop's SSL transport: a graceful stop reports every frame not wholly passed to
the kernel (stopping.py, RFC 4975 §7.1.2), and the ciphertext the TCP transport under that
layer buffers is counted nowhere: frames there were neither delivered nor reported. Here
every write is encrypted at once and its TLS records handed to the TCP transport, with where
they end in ciphertext noted, so `get_write_buffer_size` is the plaintext whose records are
not all in the kernel yet: exactly what the receiver can no longer get once the socket is
shut (a record half in the kernel never decrypts).

Rules:
- A write of at most PIECE bytes is one TLS record (RFC 8446 §5.1, RFC 5246 §6.2.1: the
  plaintext of a record is at most 2^14 bytes; OpenSSL cuts only past that); a longer one is
  written in PIECE-byte pieces, one record each, so every record's end is known. Not so for
  a client that negotiated smaller records (RFC 6066 max_fragment_length, which OpenSSL
  honours and the ssl module cannot refuse or read): its records end inside a piece, and a
  frame whose record is in the kernel while the rest of its piece is not is reported too.
- The connection above sees the stream only once the handshake is done (connection_made),
  as with the loop's SSL transport; a handshake not done within `timeout` is aborted.
- Reads decrypt into the worker's shared buffer (tls.TlsReading, issue 14) and reach the
  connection as bytes of their own size, at most one call per TCP read while it reads.
- Closing sends close_notify after what is written, reads and drops what the peer sends
  until its close_notify or its end (or SHUTDOWN), then closes the TCP transport (a FIN
  after its bytes; RFC 8446 §6.1), as the loop's SSL layer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any, Final, cast

__all__ = ["PIECE", "TlsStream"]

logger = logging.getLogger(__name__)

PIECE = 1 << 14
"""The most plaintext one TLS record carries (2^14 bytes)."""
SHUTDOWN = 30.0
"""Seconds a closing stream waits for the peer's close_notify (as the loop's SSL layer)."""

# Its states, in order.
HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSING: Final = 2
LOST: Final = 3


class TlsStream(asyncio.Protocol):
    """The TCP transport's protocol, and the transport of `app` once the handshake is done."""

    __slots__ = (
        "app",
        "buffer",
        "cipher_total",
        "ends",
        "eof",
        "error",
        "incoming",
        "obj",
        "outgoing",
        "plain_total",
        "state",
        "tcp",
        "timeout",
        "timer",
        "waiter",
    )

    def __init__(
        self,
        app: asyncio.Protocol,
        context: ssl.SSLContext,
        buffer: memoryview,
        timeout: float,
        server_hostname: str | None = None,
    ) -> None:
        """Server side unless `server_hostname` (the name the peer's certificate must
        match, RFC 6125); `buffer` is shared with the worker's other TLS streams."""
        self.app = app
        self.buffer = buffer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        client = server_hostname is not None
        self.obj = context.wrap_bio(
            self.incoming, self.outgoing, server_side=not client, server_hostname=server_hostname
        )
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None
        """Client side: done once the handshake is (the dialler awaits it, `handshaken`)."""
        if client:
            self.waiter = asyncio.get_running_loop().create_future()
        self.tcp: asyncio.Transport | None = None
        self.state = HANDSHAKE
        self.error: Exception | None = None
        """The TLS failure that ended it (a bad record): what the app's connection_lost gets."""
        self.eof = False
        """The app was told of the peer's end (close_notify, or the TCP one)."""
        self.plain_total = 0
        """Plaintext bytes written."""
        self.cipher_total = 0
        """Ciphertext bytes handed to the TCP transport (handshake and alerts included)."""
        self.ends: deque[tuple[int, int]] = deque()
        """(plaintext offset it starts at, ciphertext offset just past it) of each record the
        TCP transport may still hold, oldest first."""

    async def handshaken(self) -> None:
        """Client side: returns once the handshake is done; raises why it failed."""
        assert self.waiter is not None
        await self.waiter

    # The TCP transport's protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.tcp = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._too_slow)
        if self.waiter is not None:
            self._handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        if self.eof and self.state == OPEN:
            return  # after the peer's close_notify: nothing more is read (RFC 8446 §6.1)
        self.incoming.write(data)
        if self.state == HANDSHAKE:
            self._handshake()
        elif self.state == OPEN:
            self._read()
        elif self.state == CLOSING:  # the app reads no more, as after a TCP transport's close
            self._shut_down()

    def eof_received(self) -> bool | None:
        if self.state == HANDSHAKE:
            self._failed(ConnectionResetError("the peer closed during the TLS handshake"))
            return None
        if self.state == CLOSING:
            self._close_tcp()
            return None
        if self.eof or self.state != OPEN:
            return None
        self.eof = True
        return self.app.eof_received()  # a ragged end (no close_notify): an end all the same

    def connection_lost(self, exc: Exception | None) -> None:
        open_ = self.state != HANDSHAKE  # the app saw connection_made
        self.state = LOST
        if self.timer is not None:
            self.timer.cancel()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("closed during the TLS handshake"))
        if open_:
            self.app.connection_lost(exc or self.error)

    def pause_writing(self) -> None:
        if self.state != HANDSHAKE:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.state != HANDSHAKE:
            self.app.resume_writing()

    # The transport of the app.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        tcp = self.tcp
        if self.state != OPEN or tcp is None:
            return
        obj, outgoing, start = self.obj, self.outgoing, self.plain_total
        size = len(data)
        pieces: list[tuple[int, int]] | None = None
        try:
            if size <= PIECE:
                obj.write(data)
            else:  # one record per piece: each record's end is noted below
                view, pieces = memoryview(data), []
                for at in range(0, size, PIECE):
                    obj.write(view[at : at + PIECE])
                    pieces.append((start + at, self.cipher_total + outgoing.pending))
        except ssl.SSLError as exc:  # the session failed (a bad record read): a dead end
            self._fail(exc)
            return
        self.plain_total = start + size
        out = outgoing.read()
        self.cipher_total += len(out)
        tcp.write(out)
        ends = self.ends
        if not tcp.get_write_buffer_size():
            ends.clear()  # the usual case: the kernel took it all
        elif pieces is None:
            ends.append((start, self.cipher_total))
        else:
            ends.extend(pieces)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        """Plaintext written whose record is not wholly in the kernel: the receiver gets none
        of it if the socket is shut now (transports/base.py shut_write)."""
        ends, tcp = self.ends, self.tcp
        if not ends or tcp is None:
            return 0
        in_kernel = self.cipher_total - tcp.get_write_buffer_size()
        while ends and ends[0][1] <= in_kernel:
            ends.popleft()
        return self.plain_total - ends[0][0] if ends else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The TCP transport's limits: it holds what is written (as ciphertext, a little more
        than the plaintext), so its pause_writing and resume_writing are the app's."""
        if self.tcp is not None:
            self.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0) if self.tcp is None else self.tcp.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        obj = self.obj
        if name == "peercert":
            return obj.getpeercert()
        if name == "ssl_object":
            return obj
        if name == "sslcontext":
            return obj.context
        if name == "cipher":
            return obj.cipher()
        return default if self.tcp is None else self.tcp.get_extra_info(name, default)

    def pause_reading(self) -> None:
        if self.tcp is not None and self.state == OPEN:
            self.tcp.pause_reading()

    def resume_reading(self) -> None:
        tcp = self.tcp
        if tcp is None or self.state != OPEN or tcp.is_reading():
            return
        tcp.resume_reading()
        if self.incoming.pending or self.obj.pending():  # read before the pause, not given
            asyncio.get_running_loop().call_soon(self._read)

    def is_reading(self) -> bool:
        return self.tcp is not None and self.tcp.is_reading()

    def is_closing(self) -> bool:
        return self.state >= CLOSING

    def close(self) -> None:
        """close_notify after what is written (RFC 8446 §6.1), the TCP transport's close once
        the peer's close_notify or end comes (or after SHUTDOWN s); what it sends meanwhile is
        read and dropped: a socket closed with input unread resets, dropping our bytes."""
        tcp = self.tcp
        if self.state >= CLOSING or tcp is None:
            return
        if self.state != OPEN:
            self._close_tcp()
            return
        self.state = CLOSING
        if self.eof:  # the peer has ended: no answer to wait for
            with contextlib.suppress(ssl.SSLError):
                self.obj.unwrap()
            self._send(self.outgoing.read())
            self._close_tcp()
            return
        if not tcp.is_reading():  # paused by the app (a stop): the peer's answer is read
            tcp.resume_reading()
        self._shut_down()
        if self.state == CLOSING and not tcp.is_closing():
            self.timer = asyncio.get_running_loop().call_later(SHUTDOWN, tcp.abort)

    def _shut_down(self) -> None:
        """Closing: drop what the peer sent; close once its close_notify is in."""
        obj, buffer = self.obj, self.buffer
        with contextlib.suppress(ssl.SSLError):
            while _read_into(obj, len(buffer), buffer):
                pass
        try:
            obj.unwrap()
            done = True
        except ssl.SSLWantReadError:
            done = False  # close_notify is out; the peer's is not in yet
        except ssl.SSLError:
            done = True
        self._send(self.outgoing.read())
        if done:
            self._close_tcp()

    def _close_tcp(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        tcp = self.tcp
        if tcp is not None:
            tcp.close()
            # Its close waits for the peer to take what is buffered: one that never reads
            # would hold the socket for ever (connection_lost cancels this).
            self.timer = asyncio.get_running_loop().call_later(SHUTDOWN, tcp.abort)

    def _fail(self, exc: ssl.SSLError) -> None:
        """The TLS session failed: nothing more is read or written, the app hears why."""
        logger.debug("TLS error: %s", exc)
        self.error = exc
        self.abort()

    def abort(self) -> None:
        if self.tcp is not None:
            if self.state == OPEN:
                self.state = CLOSING
            self.tcp.abort()

    def can_write_eof(self) -> bool:
        return False

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.app

    # Inside.

    def _send(self, out: bytes) -> None:
        """Ciphertext that ends no record of app data (handshake, alerts, tickets)."""
        if out and self.tcp is not None:
            self.cipher_total += len(out)
            self.tcp.write(out)

    def _handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._send(self.outgoing.read())
            return
        except (ssl.SSLError, OSError) as exc:
            self._failed(exc)
            return
        self._send(self.outgoing.read())
        if self.timer is not None:
            self.timer.cancel()
        self.state = OPEN
        self.app.connection_made(cast(asyncio.Transport, self))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if self.state == OPEN:
            self._read()  # app data that came with the handshake's last flight

    def _too_slow(self) -> None:
        if self.state == HANDSHAKE:
            self._failed(TimeoutError("TLS handshake timeout"))

    def _failed(self, exc: Exception) -> None:
        """The handshake failed: the app never saw the connection; the alert is sent."""
        logger.debug("TLS handshake failed: %s", exc)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self._send(self.outgoing.read())
        self._close_tcp()  # the alert first; a peer that never reads is aborted (SHUTDOWN)

    def _read(self) -> None:
        """Decrypt what came, into the shared buffer, and hand it to the app: one call per
        buffer's worth, while the app reads."""
        obj, incoming, buffer, tcp = self.obj, self.incoming, self.buffer, self.tcp
        size = len(buffer)
        ended = False
        while not ended and tcp is not None and tcp.is_reading() and self.state == OPEN:
            got = 0
            try:
                while got < size and (incoming.pending or obj.pending()):
                    n = _read_into(obj, size - got, buffer[got:])
                    if not n:
                        ended = True  # the peer's close_notify
                        break
                    got += n
            except ssl.SSLWantReadError:
                pass  # the rest of a record is on its way
            except ssl.SSLZeroReturnError:
                ended = True
            except ssl.SSLError as exc:
                self._fail(exc)
                return
            if got:
                self.app.data_received(buffer[:got].tobytes())
            if got < size:
                break
        if self.outgoing.pending:  # a key update's answer, say
            self._send(self.outgoing.read())
        if ended and not self.eof and self.state == OPEN:
            self.eof = True
            if not self.app.eof_received():
                self.close()


def _read_into(obj: Any, size: int, buffer: memoryview) -> int:
    """SSLObject.read into `buffer`: a count of bytes. Typeshed says bytes (what it returns
    without a buffer), and the compiled module checks a declared type: hence Any."""
    return int(obj.read(size, buffer))
