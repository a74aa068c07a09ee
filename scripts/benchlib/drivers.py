"""What one generator process does: connect its pairs (or idle connections), load, report.

Every driver runs in its own process on its own uvloop loop. Alice and Bob of a pair live in
the same process, so Bob checks what Alice sent without any cross-process traffic. Times are
CLOCK_MONOTONIC (time.monotonic), shared by every process on the machine: the parent picks
the start time and the measurement window, each driver schedules itself against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .msrp import (
    SAME,
    Conn,
    FloodParser,
    ReadIntoConn,
    ReplyCounter,
    SendTemplate,
    StreamParser,
    authenticate,
)
from .wsconn import connect_ws

MiB = 1 << 20


@dataclass
class Job:
    mode: str
    """flood, rate, count, big or idle."""
    port: int
    """where Alice connects (plain TCP)."""
    relay_uri: bytes
    """what Bob (and an idle connection) AUTHs to."""
    auth_port: int = 0
    """where Bob connects to AUTH and stays: `port` when 0."""
    tls_ca: str = ""
    """a CA file: Bob connects with TLS trusting it (the relay route); "": plain TCP."""
    answer: bool = False
    """Bob answers every SEND with a 200, as endpoints do (the relay route waits for it)."""
    size: int = 100
    window: int = 16
    window_by: str = "replies"
    """flood, count: what ends an outstanding SEND: Alice's response ("replies") or Bob's
    receipt of the frame ("delivered": the end-to-end window)."""
    frames: int = 0
    """count: frames per pair in the counted phase (after `warm_frames`)."""
    warm_frames: int = 0
    """count: frames per pair before it (the window opens once they have all arrived)."""
    seconds: float = 10.0
    warmup: float = 1.0
    rate: float = 0.0
    """rate mode: frames/s per pair. count mode: frames/s in total, one frame in flight in
    the whole load (0: the flood, `window` outstanding per pair)."""
    big_size: int = MiB
    chunk: int = MiB
    count: int = 1
    """big mode: messages per pair."""
    verify: str = "compare"
    """big mode: how Bob checks a message: "compare" (each byte against the one sent, in
    place) or "sha256" (its digest against the sent message's)."""
    drain: float = 5.0
    share: list[int] = field(default_factory=list)
    """pair numbers (flood, rate, big), or [n, first] idle connections, users idle<first>..."""
    alice_ws: int = 0
    """flood, rate: Alice connects to this ws: port (RFC 7977), not to `port`."""
    nodes: tuple[tuple[int, bytes], ...] = ()
    """flood, rate: a cluster's nodes, (TLS port, AUTH URI) each (benchlib/cluster.py): pair
    n's Alice AUTHs (as alice<n>) on node n, its Bob on node n+1, modulo their count."""


async def connect(
    port: int, tls: ssl.SSLContext | None = None, factory: Callable[[], Conn] = Conn
) -> Conn:
    loop = asyncio.get_running_loop()
    if tls is None:
        _, conn = await loop.create_connection(factory, "127.0.0.1", port)
    else:
        _, conn = await loop.create_connection(
            factory, "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1"
        )
    return conn


_contexts: dict[str, ssl.SSLContext] = {}


def client_tls(job: Job) -> ssl.SSLContext | None:
    """The TLS context Bob connects with (one per process), or None for plain TCP."""
    if not job.tls_ca:
        return None
    if job.tls_ca not in _contexts:
        _contexts[job.tls_ca] = ssl.create_default_context(cafile=job.tls_ca)
    return _contexts[job.tls_ca]


async def connect_bob(job: Job) -> Conn:
    """A connection to AUTH on: over TLS to the relay route's TLS port, else plain TCP. In
    big mode Bob reads into one reused buffer (ReadIntoConn)."""
    factory = ReadIntoConn if job.mode == "big" else Conn
    return await connect(job.auth_port or job.port, client_tls(job), factory)  # type: ignore[arg-type]


def answerer(job: Job, bob: Conn) -> tuple[bytes | None, Callable[[bytes], object] | None]:
    """(Bob's URI, his write) for a parser that answers each SEND, or (None, None)."""
    if not job.answer:
        return None, None
    return bob.local_uri("b"), bob.transport.write  # type: ignore[union-attr]


class Pair:
    """Alice floods Bob through the relay, at most `window` SENDs outstanding and `limit` sent.

    A SEND is outstanding until Alice has its response, or with `by_delivery` (the end-to-end
    window) until Bob has received it: then how a relay paces its responses (one write per
    frame, or one per read) does not set Alice's pace. Alice and Bob live in this process, so
    that window costs no traffic: Bob's reads refill Alice.
    """

    __slots__ = (
        "alice",
        "bob",
        "by_delivery",
        "counter",
        "limit",
        "parser",
        "sending",
        "sent",
        "template",
        "waiter",
        "window",
    )

    def __init__(
        self,
        alice: Conn,
        bob: Conn,
        template: SendTemplate,
        window: int,
        parser: FloodParser,
        by_delivery: bool = False,
    ) -> None:
        self.alice, self.bob = alice, bob
        self.template = template
        self.window = window
        self.by_delivery = by_delivery
        self.limit = 1 << 62
        self.counter = ReplyCounter()
        self.parser = parser
        self.sent = 0
        self.sending = False
        self.waiter: asyncio.Future[None] | None = None
        """count mode at a steady rate: resolved once the pair is drained."""
        bob.handler = self.on_frames if by_delivery else parser.feed
        alice.handler = self.on_replies
        alice.on_resume = self.refill

    def on_replies(self, data: bytes) -> None:
        self.counter.feed(data)
        if self.sending:
            self.refill()
        elif self.waiter is not None:
            self.wake()

    def on_frames(self, data: bytes) -> None:
        self.parser.feed(data)
        if self.sending:
            self.refill()
        elif self.waiter is not None:
            self.wake()

    def wake(self) -> None:
        if self.waiter is not None and self.drained():
            self.waiter.set_result(None)
            self.waiter = None

    def refill(self) -> None:
        if self.by_delivery:
            done = self.parser.frames + self.parser.corrupt
        else:
            done = self.counter.replies
        room = min(self.window - (self.sent - done), self.limit - self.sent)
        if room > 0 and self.sending and not self.alice.paused:
            self.send(room)

    def send(self, count: int) -> None:
        data = self.template.batch(self.sent + 1, count, time.monotonic_ns())
        self.alice.transport.write(data)  # type: ignore[union-attr]
        self.sent += count

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.parser.frames, len(self.parser.lat), self.counter.replies, self.sent

    def drained(self) -> bool:
        return self.parser.frames + self.parser.corrupt >= self.sent and (
            self.counter.replies >= self.sent
        )


async def make_pair(job: Job, n: int) -> tuple[Conn, Conn, bytes]:
    """Bob authenticates; Alice only connects (on a cluster, she AUTHs too, on another node).
    Returns them and the To-Path Alice must use."""
    if job.nodes:
        return await make_cluster_pair(job, n)
    bob = await connect_bob(job)
    use_path = await authenticate(bob, job.relay_uri, b"bob%d" % n)
    alice = await (connect_ws(job.alice_ws) if job.alice_ws else connect(job.port))
    return alice, bob, use_path + b" " + bob.local_uri("b")


async def make_cluster_pair(job: Job, n: int) -> tuple[Conn, Conn, bytes]:
    """Alice on node n, Bob on node n+1, both over TLS: To-Path `<A/alice's token> <B/bob's
    token> <bob>`, node A forwarding outbound to node B, node B inbound to Bob (RFC 4976
    §6.4). With one node both tokens are its own."""
    count = len(job.nodes)
    (a_port, a_uri), (b_port, b_uri) = job.nodes[n % count], job.nodes[(n + 1) % count]
    bob = await connect(b_port, client_tls(job))
    bob_path = await authenticate(bob, b_uri, b"bob%d" % n)
    alice = await connect(a_port, client_tls(job))
    alice_path = await authenticate(alice, a_uri, b"alice%d" % n)
    return alice, bob, b"%s %s %s" % (alice_path, bob_path, bob.local_uri("b"))


def ports_of(alice: Conn, bob: Conn) -> tuple[int, int]:
    """The local ports of a pair: the relay sees them as its peers' ports."""
    a, b = (c.transport.get_extra_info("sockname")[1] for c in (alice, bob))  # type: ignore[union-attr]
    return a, b


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


class FloodDriver:
    """flood: each pair keeps `window` SENDs outstanding; rate: each pair sends `rate`/s."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.pairs: list[Pair] = []

    async def setup(self) -> dict[str, Any]:
        for n in self.job.share:
            alice, bob, to_path = await make_pair(self.job, n)
            template = SendTemplate(to_path, alice.local_uri("a"), self.job.size)
            window = self.job.window if self.job.mode != "rate" else 1 << 30
            parser = FloodParser(self.job.size, *answerer(self.job, bob))
            by_delivery = self.job.window_by == "delivered"
            self.pairs.append(Pair(alice, bob, template, window, parser, by_delivery))
        return {"ports": [ports_of(p.alice, p.bob) for p in self.pairs]}

    async def run(self, t0: float, pipe: Connection) -> dict[str, Any]:
        job = self.job
        start, stop = t0 + job.warmup, t0 + job.warmup + job.seconds
        await sleep_until(t0)
        ticker = None
        if job.mode == "flood":
            for pair in self.pairs:
                pair.sending = True
                pair.refill()
        else:
            ticker = asyncio.ensure_future(self.tick(t0, stop))
        await sleep_until(start)
        before = [p.snapshot() for p in self.pairs]
        cpu0 = time.process_time()
        await sleep_until(stop)
        after = [p.snapshot() for p in self.pairs]
        cpu = time.process_time() - cpu0
        for pair in self.pairs:
            pair.sending = False
        if ticker is not None:
            await ticker
        await self.drain()
        return self.result(before, after, cpu)

    async def tick(self, t0: float, stop: float) -> None:
        """rate mode: every millisecond, send what the schedule says is due."""
        rate = self.job.rate
        cap = 4096
        while (now := time.monotonic()) < stop:
            for pair in self.pairs:
                due = int((now - t0) * rate) - pair.sent
                room = cap - (pair.sent - pair.counter.replies)
                if due > 0 and room > 0:
                    pair.send(min(due, room))
            await asyncio.sleep(0.001)

    async def drain(self) -> None:
        deadline = time.monotonic() + self.job.drain
        while time.monotonic() < deadline and not all(p.drained() for p in self.pairs):
            await asyncio.sleep(0.02)

    def result(self, before: list[Any], after: list[Any], cpu: float) -> dict[str, Any]:
        lat: list[int] = []
        frames = replies = sent = 0
        for pair, (f0, l0, r0, s0), (f1, l1, r1, s1) in zip(self.pairs, before, after, strict=True):
            frames += f1 - f0
            replies += r1 - r0
            sent += s1 - s0
            lat.extend(pair.parser.lat[l0:l1])
        totals = {
            "sent": sum(p.sent for p in self.pairs),
            "received": sum(p.parser.frames for p in self.pairs),
            "replies": sum(p.counter.replies for p in self.pairs),
            "ok": sum(p.counter.ok for p in self.pairs),
            "non200": sum(p.counter.bad for p in self.pairs),
            "reports": sum(p.counter.reports for p in self.pairs),
            "corrupt": sum(p.parser.corrupt for p in self.pairs),
            "gaps": sum(p.parser.gaps for p in self.pairs),
            "closed": sum(p.alice.closed + p.bob.closed for p in self.pairs),
        }
        samples = [s for p in self.pairs for s in p.counter.samples + p.parser.samples]
        return {
            "frames": frames,
            "sent_window": sent,
            "replies_window": replies,
            "lat": lat,
            "cpu": cpu,
            "totals": totals,
            "samples": [repr(s)[:200] for s in samples[:5]],
        }


class CountDriver(FloodDriver):
    """count: each pair sends exactly `warm_frames` SENDs, tells the parent, and when the
    parent answers (it has opened callgrind's window), exactly `frames` more, `window`
    outstanding. Each phase ends when Bob has every frame and Alice every response: the
    counted window is bounded by frame counts, not by time (scripts/instructions).

    With `rate` (frames/s in total) the counted phase is a steady load instead: the pairs
    take turns, one frame at a time in the whole load, each sent once the one before has
    reached Bob and been answered, and no sooner than the schedule says; so the relay reads
    every frame on its own, as at a steady rate well under its capacity."""

    async def setup(self) -> dict[str, Any]:
        out = await super().setup()
        if self.job.rate:
            for pair in self.pairs:  # Bob's reads resolve the pair's waiter too
                pair.bob.handler = pair.on_frames
        return out

    async def run(self, t0: float, pipe: Connection) -> dict[str, Any]:
        await sleep_until(t0)
        pipe.send(("warm", {"complete": await self.phase(self.job.warm_frames)}))
        while not pipe.poll():
            await asyncio.sleep(0.005)
        pipe.recv()
        before = [p.snapshot() for p in self.pairs]
        cpu0 = time.process_time()
        if self.job.rate:
            complete = await self.steady(self.job.frames)
        else:
            complete = await self.phase(self.job.frames)
        out = self.result(before, [p.snapshot() for p in self.pairs], time.process_time() - cpu0)
        out["complete"] = complete
        return out

    async def phase(self, frames: int) -> bool:
        """`frames` more from each pair; True when all arrived and were answered in time."""
        for pair in self.pairs:
            pair.limit = pair.sent + frames
            pair.sending = True
            pair.refill()
        deadline = time.monotonic() + self.job.seconds
        while not (done := all(p.drained() for p in self.pairs)):
            if time.monotonic() > deadline or any(
                p.alice.closed or p.bob.closed for p in self.pairs
            ):
                break
            await asyncio.sleep(0.005)
        for pair in self.pairs:
            pair.sending = False
        return done

    async def steady(self, frames: int) -> bool:
        """`frames` more from each pair, one at a time in the whole load, at most `rate`/s."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.job.rate
        deadline = time.monotonic() + self.job.seconds
        due = time.monotonic()
        for _ in range(frames):
            for pair in self.pairs:
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                due += interval  # late frames catch up, still one at a time
                pair.waiter = loop.create_future()
                pair.send(1)
                try:
                    await asyncio.wait_for(pair.waiter, deadline - time.monotonic())
                except TimeoutError:
                    return False
                if pair.alice.closed or pair.bob.closed:
                    return False
        return True


class BigSender:
    """Alice's side of big messages: chunks of `chunk` bytes, `window` outstanding."""

    def __init__(self, alice: Conn, to_path: bytes, from_path: bytes, window: int) -> None:
        self.alice = alice
        self.counter = ReplyCounter()
        self.window = window
        self.head = b" SEND\r\nTo-Path: %s\r\nFrom-Path: %s\r\nMessage-ID: " % (to_path, from_path)
        self.queue: deque[tuple[bytes, memoryview, bytes]] = deque()
        self.tids = self.sent = 0
        alice.handler = self.on_replies
        alice.on_resume = self.pump

    def add(self, msgid: bytes, data: memoryview, chunk: int) -> None:
        total = len(data)
        for start in range(0, total, chunk):
            self.tids += 1
            tid = b"c%09x" % self.tids
            stop = min(start + chunk, total)
            head = b"MSRP %s%s%s\r\nByte-Range: %d-%d/%d\r\nContent-Type: %s\r\n\r\n" % (
                tid,
                self.head,
                msgid,
                start + 1,
                stop,
                total,
                b"application/octet-stream",
            )
            flag = b"$" if stop == total else b"+"
            self.queue.append((head, data[start:stop], b"\r\n-------%s%s\r\n" % (tid, flag)))

    def on_replies(self, data: bytes) -> None:
        self.counter.feed(data)
        self.pump()

    def pump(self) -> None:
        writelines = self.alice.transport.writelines  # type: ignore[union-attr]
        while self.queue and not self.alice.paused:
            if self.sent - self.counter.replies >= self.window:
                return
            writelines(self.queue.popleft())  # one writev: head, body (not copied), end-line
            self.sent += 1


def random_source(size: int) -> bytes:
    """Random bytes without a single '-': no body can hold an end-line."""
    data = random.Random(os.getpid()).randbytes(size)
    return data.translate(bytes.maketrans(b"-", b"."))


class BigDriver:
    """big: each pair sends `count` messages of `big_size` bytes in `chunk`-byte SENDs.

    Cheap on purpose, so that the relay, not the generator, sets the pace: Alice writes each
    chunk as one writev of its head, a view of the message (never copied) and its end-line;
    Bob reads into one reused 1 MiB buffer and compares each piece with the bytes sent, in
    place (`verify` "compare", a memcmp; "sha256" hashes instead: twice the CPU per MiB)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.senders: list[BigSender] = []
        self.parsers: list[StreamParser] = []
        self.expected: dict[bytes, tuple[int, str]] = {}
        self.done: dict[bytes, tuple[int, str, int]] = {}
        self.messages: list[tuple[BigSender, bytes, memoryview]] = []
        self.ports: list[tuple[int, int]] = []
        self.sources: dict[bytes, tuple[bytes, int]] = {}
        """compare mode: Message-ID -> (the bytes sent, where the message starts in them)."""

    def on_done(self, msgid: bytes, size: int, digest: str, now: int) -> None:
        self.done[msgid] = (size, digest, now)

    async def setup(self) -> dict[str, Any]:
        job = self.job
        source = memoryview(random_source(job.big_size + MiB))
        for n in job.share:
            alice, bob, to_path = await make_pair(job, n)
            sender = BigSender(alice, to_path, alice.local_uri("a"), job.window)
            sources = self.sources if job.verify == "compare" else None
            parser = StreamParser(self.on_done, *answerer(job, bob), sources=sources)
            if isinstance(bob, ReadIntoConn):
                bob.into = parser.feed
            else:
                bob.handler = parser.feed
            self.senders.append(sender)
            self.ports.append(ports_of(alice, bob))
            self.parsers.append(parser)
            for i in range(job.count):
                offset = (n * 7919 + i * 104729) % MiB
                data = source[offset : offset + job.big_size]
                msgid = b"m%d-%d" % (n, i)
                if job.verify == "compare":
                    self.sources[msgid] = (data.obj, offset)  # type: ignore[assignment]
                    self.expected[msgid] = (len(data), SAME)
                else:
                    self.expected[msgid] = (len(data), hashlib.sha256(data).hexdigest())
                self.messages.append((sender, msgid, data))
        return {"ports": self.ports}

    async def run(self, t0: float, pipe: Connection) -> dict[str, Any]:
        for sender, msgid, data in self.messages:
            sender.add(msgid, data, self.job.chunk)
        await sleep_until(t0)
        cpu0 = time.process_time()
        for sender in self.senders:
            sender.pump()
        deadline = t0 + 300
        while len(self.done) < len(self.expected) and time.monotonic() < deadline:
            if any(s.alice.closed for s in self.senders):
                break
            await asyncio.sleep(0.005)
        cpu = time.process_time() - cpu0
        good = sum(1 for k, v in self.done.items() if self.expected[k] == v[:2])
        return {
            "messages": len(self.expected),
            "intact": good,
            "bytes": sum(v[0] for k, v in self.done.items() if self.expected[k] == v[:2]),
            "last_ns": max((v[2] for v in self.done.values()), default=0),
            "cpu": cpu,
            "non200": sum(s.counter.bad for s in self.senders),
            "reports": sum(s.counter.reports for s in self.senders),
            "errors": sum(p.errors for p in self.parsers),
            "closed": sum(s.alice.closed for s in self.senders),
            "samples": [x for p in self.parsers for x in p.samples][:5]
            + [repr(x) for s in self.senders for x in s.counter.samples][:5],
        }


class IdleDriver:
    """idle: n connections, each authenticated, then silent until the parent says go."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.conns: list[Conn] = []
        self.failed = 0
        self.errors: list[str] = []

    async def one(self, n: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                conn = await connect_bob(self.job)
                await authenticate(conn, self.job.relay_uri, b"idle%d" % n)
                self.conns.append(conn)
            except (OSError, EOFError, RuntimeError, TimeoutError) as exc:
                self.failed += 1
                if len(self.errors) < 3:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

    async def setup(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(200)
        count, base = self.job.share
        await asyncio.gather(*(self.one(base + i, gate) for i in range(count)))
        return {"authenticated": len(self.conns), "failed": self.failed, "errors": self.errors}

    async def run(self, t0: float, pipe: Connection) -> dict[str, Any]:
        """Called when the parent has measured and held: count what is still open, close."""
        await asyncio.sleep(0.3)
        alive = sum(1 for c in self.conns if not c.closed)
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0.1)
        return {"authenticated": len(self.conns), "alive": alive, "failed": self.failed}


class Driver(Protocol):
    async def setup(self) -> dict[str, Any]: ...

    async def run(self, t0: float, pipe: Connection) -> dict[str, Any]: ...


DRIVERS: dict[str, Callable[[Job], Driver]] = {
    "flood": FloodDriver,
    "rate": FloodDriver,
    "count": CountDriver,
    "big": BigDriver,
    "idle": IdleDriver,
}
