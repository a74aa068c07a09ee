"""The wire side of the generator: pre-built SENDs, the 200 counter, Bob's parsers, AUTH.

Cheap per frame on purpose: Alice's frames are joined from constant pieces plus a 10-digit
hex transaction id; her replies are counted with bytes.count over whole reads, never parsed
one by one; Bob checks each relayed frame in place (bytes.startswith with offsets, no copies
of the body) and only slices the id and the send time.

Body of a flood frame: `<tid> <send time, monotonic ns, 16 hex> ` then a fixed text fill, so
Bob verifies that the body belongs to the frame's own transaction, is intact to the last byte,
and reads the latency from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable

PREFIX = 28
"""b"%010x %016x " % (seq, send_ns): the start of every flood body."""

_PATTERN = b"MSRP load generator fill: the quick brown fox jumps over the lazy dog 0123456789. "
_NONCE = re.compile(rb'nonce="([^"]+)"')
_OPAQUE = re.compile(rb'opaque="([^"]+)"')
_USE_PATH = re.compile(rb"\r\nUse-Path: *([^\r\n]+)")
_CODE = re.compile(rb"MSRP \S+ (\d{3})")


def text_fill(n: int) -> bytes:
    return (_PATTERN * (n // len(_PATTERN) + 1))[:n]


def tid_of(seq: int) -> bytes:
    return b"%010x" % seq


class SendTemplate:
    """SEND frames from Alice to Bob through the relay, body size fixed, built in batches."""

    def __init__(self, to_path: bytes, from_path: bytes, size: int) -> None:
        if size < PREFIX:
            raise ValueError(f"flood bodies are at least {PREFIX} bytes")
        self.mid = b" SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: " % (to_path, from_path)
        self.range = b"\r\nByte-Range: 1-%d/%d\r\nContent-Type: text/plain\r\n\r\n" % (size, size)
        self.fill = text_fill(size - PREFIX)
        self.size = size

    def batch(self, first: int, count: int, now_ns: int) -> bytes:
        """`count` frames with transaction ids first..first+count-1, all stamped `now_ns`."""
        stamp = b" %016x " % now_ns
        mid, rng, fill = self.mid, self.range, self.fill
        parts: list[bytes] = []
        add = parts.extend
        for seq in range(first, first + count):
            t = b"%010x" % seq
            add((b"MSRP ", t, mid, t, rng, t, stamp, fill, b"\r\n-------", t, b"$\r\n"))
        return b"".join(parts)


class ReplyCounter:
    """Counts the relay's responses on Alice's connection: whole reads, no per-frame work.

    Responses carry no body, so each ends at the only `$\\r\\n` it holds; a read is counted up
    to its last one and the rest waits for the next read.
    """

    __slots__ = ("bad", "ok", "replies", "rest", "samples")

    def __init__(self) -> None:
        self.rest = b""
        self.replies = self.ok = self.bad = 0
        self.samples: list[bytes] = []

    def feed(self, data: bytes) -> int:
        buf = self.rest + data if self.rest else data
        cut = buf.rfind(b"$\r\n")
        if cut < 0:
            self.rest = buf
            return 0
        cut += 3
        n = buf.count(b"$\r\n", 0, cut)
        ok = buf.count(b" 200 OK\r\n", 0, cut)
        self.rest = buf[cut:]
        self.replies += n
        self.ok += ok
        if ok != n:
            self._note_bad(buf[:cut], n - ok)
        return n

    def _note_bad(self, done: bytes, bad: int) -> None:
        self.bad += bad
        if len(self.samples) < 5:
            lines = [ln for ln in done.split(b"\r\n") if ln.startswith(b"MSRP ")]
            self.samples.extend(ln for ln in lines if b" 200 OK" not in ln)
            del self.samples[5:]


class FloodParser:
    """Bob's side of a flood: relayed SENDs of a known body size, checked and timed.

    For each frame: the head ends at the first blank line; the body is `size` bytes and must
    start with the frame's own tid, end with the fill and be followed by the frame's end-line
    with flag `$`. Anything else is counted corrupt and skipped up to its end-line.
    """

    __slots__ = (
        "bytes",
        "corrupt",
        "fill",
        "frames",
        "gaps",
        "lat",
        "next_seq",
        "rest",
        "samples",
        "size",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self.fill = text_fill(size - PREFIX)
        self.rest = b""
        self.frames = self.bytes = self.corrupt = self.gaps = 0
        self.next_seq = 1
        self.lat: list[int] = []
        self.samples: list[bytes] = []

    def feed(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        now = time.monotonic_ns()
        n = len(buf)
        pos = 0
        size, fill, lat = self.size, self.fill, self.lat
        frames = 0
        while True:
            he = buf.find(b"\r\n\r\n", pos)
            if he < 0:
                break
            sp = buf.find(b" ", pos + 5, he)
            tid = buf[pos + 5 : sp]
            bs = he + 4
            be = bs + size
            end = b"\r\n-------" + tid + b"$\r\n"
            fe = be + len(end)
            if fe > n:
                break
            if (
                buf.startswith(end, be)
                and buf.startswith(tid, bs)
                and buf.startswith(fill, bs + PREFIX, be)
                and buf.startswith(b"MSRP ", pos)
            ):
                lat.append(now - int(buf[bs + 11 : bs + 27], 16))
                seq = int(tid, 16)
                if seq != self.next_seq:
                    self.gaps += 1
                self.next_seq = seq + 1
                frames += 1
                pos = fe
                continue
            skip = self._skip_bad(buf, pos, he, tid)
            if skip < 0:
                break
            pos = skip
        self.frames += frames
        self.bytes += frames * size
        self.rest = buf[pos:] if pos < n else b""

    def _skip_bad(self, buf: bytes, pos: int, he: int, tid: bytes) -> int:
        """A frame that is not the expected one: find its real end-line; -1 to wait for more."""
        at = buf.find(b"-------" + tid, he)
        if at < 0 or at + len(tid) + 10 > len(buf):
            if len(buf) - pos > 64 << 20:
                raise RuntimeError("lost framing on Bob's connection")
            return -1
        self.corrupt += 1
        if len(self.samples) < 3:
            self.samples.append(buf[pos : min(he, pos + 200)])
        return at + len(tid) + 10


class StreamParser:
    """Bob's side of big messages: any body size, hashed as it arrives, never buffered.

    Chunks of one message (same Message-ID) must arrive in Byte-Range order; when the last
    ($) ends, its sha256 and size go to `done(message_id, size, digest, now_ns)`.
    """

    def __init__(self, done) -> None:  # type: ignore[no-untyped-def]
        self.done = done
        self.rest = b""
        self.body_left = -1
        self.tail = b""
        self.msgs: dict[bytes, list] = {}  # type: ignore[type-arg]
        self.current: list | None = None  # type: ignore[type-arg]
        self.bytes = self.errors = 0
        self.samples: list[str] = []

    def feed(self, data: bytes) -> None:
        view = memoryview(self.rest + data if self.rest else data)
        self.rest = b""
        pos = 0
        while pos < len(view):
            if self.body_left > 0:
                take = min(self.body_left, len(view) - pos)
                self.current[1].update(view[pos : pos + take])  # type: ignore[index]
                self.body_left -= take
                self.bytes += take
                pos += take
                continue
            step = self._tail(view, pos) if self.body_left == 0 else self._head(view, pos)
            if step < 0:
                self.rest = bytes(view[pos:])
                return
            pos = step

    def _error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what)

    def _head(self, view: memoryview, pos: int) -> int:
        buf = bytes(view[pos : pos + 65536])
        he = buf.find(b"\r\n\r\n")
        if he < 0:
            return -1
        head = buf[:he].decode("latin-1")
        first, *lines = head.split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if ": " in line)
        tid = first.split(" ")[1].encode()
        msgid = headers.get("Message-ID", "").encode()
        start, stop_total = headers.get("Byte-Range", "1-0/0").split("-", 1)
        stop, total = stop_total.split("/")
        msg = self.msgs.get(msgid)
        if msg is None:
            msg = self.msgs[msgid] = [1, hashlib.sha256(), int(total), msgid]
        if int(start) != msg[0]:
            self._error(f"{msgid!r}: chunk starts at {start}, expected {msg[0]}")
        msg[0] = int(stop) + 1
        self.current = msg
        self.body_left = int(stop) - int(start) + 1
        self.tail = b"\r\n-------" + tid
        return pos + he + 4

    def _tail(self, view: memoryview, pos: int) -> int:
        need = len(self.tail) + 3
        if len(view) - pos < need:
            return -1
        got = bytes(view[pos : pos + need])
        msg = self.current
        assert msg is not None
        if not got.startswith(self.tail) or got[-2:] != b"\r\n":
            self._error(f"bad end-line {got!r}")
        elif got[-3:-2] == b"$":
            self.done(msg[3], msg[0] - 1, msg[1].hexdigest(), time.monotonic_ns())
            del self.msgs[msg[3]]
        self.body_left = -1
        self.current = None
        return pos + need


class Conn(asyncio.Protocol):
    """One client connection: request/response while setting up, then `handler` per read."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.handler: Callable[[bytes], None] | None = None
        self.buf = b""
        self.want = b""
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = False
        self.paused = False
        self.on_resume: Callable[[], None] | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler(data)
            return
        self.buf += data
        at = self.buf.find(self.want) if self.want else -1
        if at >= 0 and len(self.buf) >= at + len(self.want) + 3 and self.waiter is not None:
            frame, self.buf = (
                self.buf[: at + len(self.want) + 3],
                self.buf[at + len(self.want) + 3 :],
            )
            if not self.waiter.done():
                self.waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(EOFError("the relay closed the connection"))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_resume is not None:
            self.on_resume()

    async def request(self, frame: bytes, tid: bytes, timeout: float = 10.0) -> bytes:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.want = b"-------" + tid
        self.transport.write(frame)
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        finally:
            self.waiter = None

    def local_uri(self, tag: str) -> bytes:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"msrp://{host}:{port}/{tag}{port};tcp".encode()


def _auth_request(tid: bytes, relay_uri: bytes, me: bytes, extra: bytes = b"") -> bytes:
    return b"MSRP %s AUTH\r\nTo-Path: %s\r\nFrom-Path: %s\r\n%s-------%s$\r\n" % (
        tid,
        relay_uri,
        me,
        extra,
        tid,
    )


def _md5(text: bytes) -> bytes:
    return hashlib.md5(text, usedforsecurity=False).hexdigest().encode()


def digest_header(
    challenge: bytes, user: bytes, uri: bytes, realm: bytes, password: bytes
) -> bytes:
    """The Authorization line answering a 401 (RFC 2617, MD5, qop=auth)."""
    nonce = _NONCE.search(challenge)
    if nonce is None:
        raise RuntimeError(f"no nonce in the 401: {challenge[:300]!r}")
    opaque = _OPAQUE.search(challenge)
    nc, cnonce = b"00000001", b"0a4f113b"
    ha1 = _md5(b"%s:%s:%s" % (user, realm, password))
    ha2 = _md5(b"AUTH:" + uri)
    response = _md5(b":".join((ha1, nonce[1], nc, cnonce, b"auth", ha2)))
    value = (
        b'Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
        b'qop=auth, nc=%s, cnonce="%s"' % (user, realm, nonce[1], uri, response, nc, cnonce)
    )
    if opaque is not None:
        value += b', opaque="%s"' % opaque[1]
    return b"Authorization: " + value + b"\r\n"


async def authenticate(conn: Conn, relay_uri: bytes, user: bytes, seq: int = 1) -> bytes:
    """AUTH, 401, AUTH with digest, 200: the Use-Path the relay granted."""
    me = conn.local_uri("b")
    tid = b"auth%06x" % seq
    first = await conn.request(_auth_request(tid, relay_uri, me), tid)
    if not first.startswith(b"MSRP %s 401" % tid):
        raise RuntimeError(f"AUTH: expected 401, got {first[:200]!r}")
    creds = digest_header(first, user, relay_uri, b"myrealm", b"xyz123")
    tid2 = b"auth%06x" % (seq + 1)
    final = await conn.request(_auth_request(tid2, relay_uri, me, creds), tid2)
    code = _CODE.match(final)
    use_path = _USE_PATH.search(final)
    if code is None or code[1] != b"200" or use_path is None:
        raise RuntimeError(f"AUTH: expected 200 with Use-Path, got {final[:300]!r}")
    return use_path[1].strip()
