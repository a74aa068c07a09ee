"""The wire side of the generator: pre-built SENDs, the 200 counter, Bob's parsers, AUTH.

Cheap per frame on purpose: Alice's frames are joined from constant pieces plus a 10-digit
hex sequence number; her replies are counted with bytes.count over whole reads, never parsed
one by one; Bob checks each relayed frame in place (bytes.startswith with offsets, no copies
of the body) and only slices the id, the sequence number and the send time. When Bob answers
(`answer_as`), his 200s for one read go out in one write.

Body of a flood frame: `<sequence number, 10 hex> <send time, monotonic ns, 16 hex> ` then a
fixed text fill. Alice's transaction id and Message-ID are the same sequence number, but a
relay may forward under a new transaction id (RFC 4976 §6.4: the relay route does), so Bob
never reads the id for anything but the end-line: the body must start with the frame's
Message-ID (which relays keep), order and latency come from the body, and the fill is checked
to the last byte.
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
_FROM = b"\r\nFrom-Path: "
_MSGID = b"\r\nMessage-ID: "


def first_from(buf: bytes, pos: int, he: int) -> bytes:
    """The first From-Path URI of the frame whose head is buf[pos:he] (b"" if none)."""
    at = buf.find(_FROM, pos, he)
    if at < 0:
        return b""
    at += len(_FROM)
    eol = buf.find(b"\r\n", at, he)
    if eol < 0:
        eol = he
    sp = buf.find(b" ", at, eol)
    return buf[at : eol if sp < 0 else sp]


def ok_response(tid: bytes, to: bytes, me: bytes) -> bytes:
    """What an endpoint answers a SEND with (RFC 4975 §7.2): To-Path is the previous hop."""
    return b"MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n" % (tid, to, me, tid)


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
        """`count` frames with sequence numbers (and transaction ids) first..first+count-1,
        all stamped `now_ns`."""
        stamp = b" %016x " % now_ns
        mid, rng, fill = self.mid, self.range, self.fill
        parts: list[bytes] = []
        add = parts.extend
        for seq in range(first, first + count):
            t = b"%010x" % seq
            add((b"MSRP ", t, mid, t, rng, t, stamp, fill, b"\r\n-------", t, b"$\r\n"))
        return b"".join(parts)


class ReplyCounter:
    """Counts what the relay sends on Alice's connection: whole reads, no per-frame work.

    Nothing it sends there carries a body (responses, and the REPORTs a relay sends when a
    forwarded SEND failed, e.g. 408 when Bob never answered), so each frame ends at the only
    `$\\r\\n` it holds; a read is counted up to its last one and the rest waits for the next
    read. `replies` counts the responses (the window waits for them), `ok` their 200s, `bad`
    the other responses, `reports` the REPORTs (errors, never replies).
    """

    __slots__ = ("bad", "ok", "replies", "reports", "rest", "samples")

    def __init__(self) -> None:
        self.rest = b""
        self.replies = self.ok = self.bad = self.reports = 0
        self.samples: list[bytes] = []

    def feed(self, data: bytes) -> int:
        buf = self.rest + data if self.rest else data
        cut = buf.rfind(b"$\r\n")
        if cut < 0:
            self.rest = buf
            return 0
        cut += 3
        n = buf.count(b"$\r\n", 0, cut)
        reports = buf.count(b" REPORT\r\n", 0, cut)
        ok = buf.count(b" 200 OK\r\nTo-Path: ", 0, cut)
        self.rest = buf[cut:]
        n -= reports
        self.replies += n
        self.ok += ok
        if reports:
            self.reports += reports
        if ok != n or reports:
            self._note_bad(buf[:cut], n - ok)
        return n

    def _note_bad(self, done: bytes, bad: int) -> None:
        self.bad += bad
        if len(self.samples) < 5:
            lines = [ln for ln in done.split(b"\r\n") if ln.startswith((b"MSRP ", b"Status: "))]
            self.samples.extend(ln for ln in lines if not ln.endswith(b" 200 OK"))
            del self.samples[5:]


class FloodParser:
    """Bob's side of a flood: relayed SENDs of a known body size, checked and timed.

    For each frame: the head ends at the first blank line; the body is `size` bytes and must
    start with the frame's Message-ID (the sequence number) and a send time (PREFIX), end with
    the fill and be followed by the end-line of the frame's own transaction id (whatever id
    the relay gave it) with flag `$`. Order and latency come from the body: a sequence number
    other than the last one plus 1 counts out of order. Anything else is counted corrupt and
    skipped up to its end-line.

    With `answer_as` (Bob's URI) and `write`, every SEND (corrupt ones too) is answered 200, to
    its first From-Path URI, as an endpoint does; the answers of one read go in one write.
    """

    __slots__ = (
        "answer_as",
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
        "write",
    )

    def __init__(
        self,
        size: int,
        answer_as: bytes | None = None,
        write: Callable[[bytes], object] | None = None,
    ) -> None:
        self.size = size
        self.fill = text_fill(size - PREFIX)
        self.rest = b""
        self.frames = self.bytes = self.corrupt = self.gaps = 0
        self.next_seq = 1
        self.lat: list[int] = []
        self.samples: list[bytes] = []
        self.answer_as = answer_as if write is not None else None
        self.write = write

    def feed(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        now = time.monotonic_ns()
        n = len(buf)
        pos = 0
        size, fill, lat, me = self.size, self.fill, self.lat, self.answer_as
        answers: list[bytes] = []
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
            mi = buf.find(_MSGID, pos, he) + len(_MSGID)  # < len(_MSGID): none
            if (
                buf.startswith(end, be)
                and buf.startswith(fill, bs + PREFIX, be)
                and buf.startswith(b"MSRP ", pos)
                and buf[bs + 10] == buf[bs + 27] == 32  # b" " after the number and the time
                and mi >= len(_MSGID)
                and buf[mi + 10] == 13  # b"\r": a 10-character Message-ID
                and buf.startswith(buf[mi : mi + 10], bs)
            ):
                try:
                    seq = int(buf[bs : bs + 10], 16)
                    sent = int(buf[bs + 11 : bs + 27], 16)
                except ValueError:
                    seq = -1
                if seq >= 0:
                    lat.append(now - sent)
                    if seq != self.next_seq:
                        self.gaps += 1
                    self.next_seq = seq + 1
                    frames += 1
                    if me is not None:
                        answers.append(ok_response(tid, first_from(buf, pos, he), me))
                    pos = fe
                    continue
            skip = self._skip_bad(buf, pos, he, tid)
            if skip < 0:
                break
            if me is not None:
                answers.append(ok_response(tid, first_from(buf, pos, he), me))
            pos = skip
        self.frames += frames
        self.bytes += frames * size
        self.rest = buf[pos:] if pos < n else b""
        if answers:
            self.write(b"".join(answers))  # type: ignore[misc]

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


SAME = "the same bytes"
"""StreamParser's verdict on a message whose every byte is the one sent (compare mode)."""


class StreamParser:
    """Bob's side of big messages: any body size, checked as it arrives, never buffered.

    Chunks of one message (same Message-ID) must arrive in Byte-Range order; when the last
    ($) ends, its size and verdict go to `done(message_id, size, verdict, now_ns)`. The
    verdict: with `sources` (Message-ID -> the bytes sent, where the message starts in them),
    SAME when every byte equals the byte sent at its offset (a memcmp per piece, in place:
    cheap enough that the generator does not set the pace), else "differs"; without, the
    sha256 hex digest of what arrived. With `answer_as` and `write`, each chunk is answered 200
    at its end-line, as FloodParser does. `feed` takes bytes or a memoryview it may not keep.
    """

    def __init__(  # type: ignore[no-untyped-def]
        self,
        done,
        answer_as: bytes | None = None,
        write: Callable[[bytes], object] | None = None,
        sources: dict[bytes, tuple[bytes, int]] | None = None,
    ) -> None:
        self.done = done
        self.sources = sources
        self.rest = b""
        self.body_left = -1
        self.tail = b""
        self.answer = b""
        self.answers: list[bytes] = []
        self.answer_as = answer_as if write is not None else None
        self.write = write
        self.msgs: dict[bytes, list] = {}  # type: ignore[type-arg]
        self.current: list | None = None  # type: ignore[type-arg]
        self.bytes = self.errors = 0
        self.samples: list[str] = []

    def feed(self, data: bytes) -> None:
        self._feed(data)
        if self.answers:
            self.write(b"".join(self.answers))  # type: ignore[misc]
            self.answers.clear()

    def _feed(self, data: bytes | memoryview) -> None:
        view = memoryview(self.rest + data if self.rest else data)
        self.rest = b""
        pos = 0
        while pos < len(view):
            if self.body_left > 0:
                take = min(self.body_left, len(view) - pos)
                msg = self.current
                assert msg is not None
                piece = view[pos : pos + take]
                if self.sources is None:
                    msg[1].update(piece)
                elif msg[1] and not msg[4].startswith(piece, msg[5] + msg[6]):
                    msg[1] = False  # a byte differs from the one sent there
                msg[6] += take
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
            # [next byte expected, sha256 or still equal, total, id, source, start, received]
            msg = self.msgs[msgid] = [1, hashlib.sha256(), int(total), msgid, b"", 0, 0]
            if self.sources is not None:
                msg[1] = msgid in self.sources
                msg[4], msg[5] = self.sources.get(msgid, (b"", 0))
        if int(start) != msg[0]:
            self._error(f"{msgid!r}: chunk starts at {start}, expected {msg[0]}")
        msg[0] = int(stop) + 1
        self.current = msg
        self.body_left = int(stop) - int(start) + 1
        self.tail = b"\r\n-------" + tid
        if self.answer_as is not None:
            self.answer = ok_response(tid, first_from(buf, 0, he), self.answer_as)
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
            if self.sources is None:
                verdict = msg[1].hexdigest()
            else:
                verdict = SAME if msg[1] and msg[6] == msg[0] - 1 else "differs"
            self.done(msg[3], msg[0] - 1, verdict, time.monotonic_ns())
            del self.msgs[msg[3]]
        if self.answer:
            self.answers.append(self.answer)
            self.answer = b""
        self.body_left = -1
        self.current = None
        return pos + need


class _ConnBase:
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
        """msrps:// over TLS, msrp:// over plain TCP."""
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        tls = self.transport.get_extra_info("ssl_object") is not None
        return f"msrp{'s' if tls else ''}://{host}:{port}/{tag}{port};tcp".encode()


class Conn(_ConnBase, asyncio.Protocol):
    """A connection read the usual way: a new bytes object per read."""


READ_INTO = 1 << 20
"""Bytes a ReadIntoConn reads at most per read, into the one buffer it reuses."""


class ReadIntoConn(_ConnBase, asyncio.BufferedProtocol):
    """A connection whose reads land in one buffer it reuses (uvloop calls get_buffer and
    buffer_updated: recv_into, READ_INTO bytes at most per read): no bytes object per read,
    and a quarter of the reads of uvloop's own 256 KiB buffer. Bob's side of `big` reads
    this way so that the generator stays cheap beside the relay it measures. `into`, once set,
    gets each read as a memoryview valid only during the call; before that (AUTH), reads
    are copied out and go to data_received as usual."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray(READ_INTO)
        self.view = memoryview(self.buffer)
        self.into: Callable[[memoryview], None] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        into = self.into
        if into is not None:
            into(self.view[:nbytes])
        else:
            self.data_received(bytes(self.view[:nbytes]))

    def eof_received(self) -> bool | None:
        return None


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
