"""Soak: mixed traffic through a live msrpd for a long time, with worker kills and reloads.

Usage: scripts/soak [--minutes 60] [--children 4] [--pairs 20] ...   (--help for every option)

Every client is checked message by message. Alice and Bob of each pair send each other
SENDs through the relay's sessions (`To-Path: <relay token of the peer> <peer>`), mostly
small, now and then a large streamed one; idle clients hold an authenticated session and get
a probe now and then. Each body names its receiver, its sender and a per-sender sequence
number. Meanwhile a worker is SIGKILLed every --kill-every seconds and the relay is reloaded
every --reload-every seconds (`msrpd reload`).

At the end (after a quiet period in which nothing is sent) every message is one of:
  delivered       the 200 came, and the named receiver got it exactly once
  rejected        answered 481/408 (its session had died with a killed worker)
  reported        a failure REPORT for it reached its sender
  lost (killed)   acknowledged, never delivered nor reported, and the receiver's or the
                  sender's connection died with a killed worker after it was sent
  lost            acknowledged, never delivered nor reported, nothing was killed under it
and separately counted: misdelivered (a client got a message meant for another), duplicates,
out of order (per sender, per receiver connection), unanswered requests, and connections
closed that no kill explains (a reload must close none).

The relay runs with this checkout's msrpd (`python -m msrpd`), in a temporary run_dir, on
127.0.0.1; only the processes it started are signalled. Exit status 1 when anything was
misdelivered, duplicated, out of order, lost without a kill, or closed without a kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from benchlib.msrp import digest_header
from benchlib.relays import Msrpd

from msrpd.protocol import BodyPiece, Frame, FrameEnd, FrameReader, ReaderLimits

KILL_GRACE = 3.0
"""A connection that closes this long after a kill is put down to the kill."""


@dataclass
class Msg:
    ident: bytes
    sender: str
    receiver: str
    seq: int
    sent_at: float
    sender_epoch: int
    receiver_epoch: int
    status: int = 0
    delivered: int = 0
    reported: bool = False


@dataclass
class Ledger:
    messages: dict[bytes, Msg] = field(default_factory=dict)
    misdelivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unanswered: int = 0
    other_status: dict[int, int] = field(default_factory=dict)
    kills: list[float] = field(default_factory=list)
    reloads: int = 0
    closes_killed: int = 0
    closes_unexplained: int = 0
    samples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.samples) < 20:
            self.samples.append(f"{time.strftime('%H:%M:%S')} {text}")

    def killed_near(self, when: float) -> bool:
        return any(k <= when <= k + KILL_GRACE for k in self.kills)


class Client(asyncio.Protocol):
    """One MSRP client: AUTHs, keeps its session, sends and checks what it receives."""

    def __init__(self, name: str, relay: Soak) -> None:
        self.name = name
        self.soak = relay
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader(ReaderLimits(max_body=64 << 20))
        self.uri = b""
        self.token = b""
        self.epoch = 0
        self.alive = False
        self.died_at: dict[int, float] = {}
        self.waiters: dict[bytes, asyncio.Future[Frame]] = {}
        self.pending: dict[bytes, tuple[Msg, float]] = {}  # tid -> message, sent at
        self.last_seq: dict[str, int] = {}
        self.stream: tuple[Frame, list[bytes]] | None = None
        self.lost = asyncio.Event()
        self.tids = 0
        self.seq = 0

    # -- connection -------------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = FrameReader(ReaderLimits(max_body=64 << 20))
        self.lost = asyncio.Event()
        await loop.create_connection(lambda: self, "127.0.0.1", self.soak.relay.port)
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        self.uri = b"msrp://%s:%d/%s;tcp" % (host.encode(), port, self.name.encode())
        relay_uri = self.soak.relay.relay_uri
        first = await self.request(self._auth(relay_uri, b""))
        if first.code != 401:
            raise RuntimeError(f"{self.name}: AUTH got {first.code}, not 401")
        creds = digest_header(bytes(first.buf), b"soak", relay_uri, b"myrealm", b"xyz123")
        final = await self.request(self._auth(relay_uri, creds))
        use_path = final.header("Use-Path")
        if final.code != 200 or use_path is None:
            raise RuntimeError(f"{self.name}: AUTH got {final.code}")
        self.token = use_path.split()[0]
        self.epoch += 1
        self.alive = True

    def _auth(self, relay_uri: bytes, creds: bytes) -> tuple[bytes, bytes]:
        tid = self.new_tid()
        frame = b"MSRP %s AUTH\r\nTo-Path: %s\r\nFrom-Path: %s\r\n%s-------%s$\r\n" % (
            tid,
            relay_uri,
            self.uri,
            creds,
            tid,
        )
        return tid, frame

    def new_tid(self) -> bytes:
        self.tids += 1
        return b"%s%x" % (self.name.encode(), self.tids)

    async def request(self, tid_frame: tuple[bytes, bytes], timeout: float = 10.0) -> Frame:
        tid, frame = tid_frame
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.waiters[tid] = future
        assert self.transport is not None
        self.transport.write(frame)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiters.pop(tid, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        now = time.monotonic()
        if self.alive and not self.soak.stopping:  # not the relay's own stop at the end
            self.died_at[self.epoch] = now
            if self.soak.ledger.killed_near(now):
                self.soak.ledger.closes_killed += 1
            else:
                self.soak.ledger.closes_unexplained += 1
                self.soak.ledger.note(f"{self.name}: connection closed, no kill near ({exc})")
        self.alive = False
        for future in self.waiters.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))
        for msg, _ in self.pending.values():
            msg.status = msg.status or -1  # no answer: the connection died
        self.pending.clear()
        self.lost.set()

    # -- receiving --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.reader.receive_data(data)
        for event in self.reader.events():
            if isinstance(event, Frame):
                if event.streamed:
                    self.stream = (event, [])
                else:
                    body = event.body
                    self.on_frame(event, b"" if body is None else bytes(body))
            elif isinstance(event, BodyPiece) and self.stream is not None:
                self.stream[1].append(bytes(event.data))
            elif isinstance(event, FrameEnd) and self.stream is not None:
                frame, parts = self.stream
                self.stream = None
                if event.flag == b"$":
                    self.on_frame(frame, b"".join(parts))

    def on_frame(self, frame: Frame, body: bytes) -> None:
        ledger = self.soak.ledger
        if frame.method is None:
            future = self.waiters.get(frame.tid)
            if future is not None and not future.done():
                future.set_result(frame)
                return
            entry = self.pending.pop(frame.tid, None)
            if entry is not None:
                entry[0].status = frame.code or 0
            return
        if frame.method == b"REPORT":
            status = frame.header("Status") or b""
            ident = frame.header("Message-ID") or b""
            msg = ledger.messages.get(ident)
            if msg is not None and not status.startswith(b"000 200"):
                msg.reported = True
            return
        if frame.method != b"SEND":
            return
        self.ack(frame)
        head, _, _ = body.partition(b"\n")
        fields = dict(item.split(b"=", 1) for item in head.split()[1:] if b"=" in item)
        ident = fields.get(b"id", b"")
        msg = ledger.messages.get(ident)
        if fields.get(b"to", b"").decode() != self.name or msg is None:
            ledger.misdelivered += 1
            ledger.note(f"{self.name} got a message meant for {fields.get(b'to')!r}")
            return
        if msg.delivered:
            ledger.duplicates += 1
            ledger.note(f"{self.name} got {ident!r} twice")
        msg.delivered += 1
        key = f"{msg.sender}/{self.epoch}"
        if msg.seq <= self.last_seq.get(key, -1):
            ledger.out_of_order += 1
            ledger.note(f"{self.name}: {ident!r} (seq {msg.seq}) after seq {self.last_seq[key]}")
        self.last_seq[key] = max(msg.seq, self.last_seq.get(key, -1))

    def ack(self, frame: Frame) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        to = frame.from_path_raw.split()[0]
        self.transport.write(
            b"MSRP %s 200 OK\r\nTo-Path: %s\r\nFrom-Path: %s\r\n-------%s$\r\n"
            % (frame.tid, to, self.uri, frame.tid)
        )

    # -- sending ----------------------------------------------------------------------------

    def send(self, peer: Client, size: int) -> None:
        # A peer whose connection died keeps its old token here until it has re-AUTHed: what
        # is sent to that token must be answered 481, never delivered to someone else.
        if not self.alive or not peer.token or self.transport is None:
            return
        if self.transport.get_write_buffer_size() > 8 << 20:
            return  # the relay is pushing back: skip a beat rather than queue without end
        self.seq += 1
        ident = b"%s-%d-%d" % (self.name.encode(), self.epoch, self.seq)
        msg = Msg(ident, self.name, peer.name, self.seq, time.monotonic(), self.epoch, peer.epoch)
        head = b"soak to=%s from=%s seq=%d id=%s\n" % (
            peer.name.encode(),
            self.name.encode(),
            self.seq,
            ident,
        )
        body = head + b"x" * max(0, size - len(head))
        tid = self.new_tid()
        frame = (
            b"MSRP %s SEND\r\nTo-Path: %s %s\r\nFrom-Path: %s\r\nMessage-ID: %s\r\n"
            b"Byte-Range: 1-%d/%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n-------%s$\r\n"
            % (tid, peer.token, peer.uri, self.uri, ident, len(body), len(body), body, tid)
        )
        self.soak.ledger.messages[ident] = msg
        self.pending[tid] = (msg, msg.sent_at)
        self.transport.write(frame)

    def expire(self, now: float, limit: float) -> None:
        for tid, (msg, at) in list(self.pending.items()):
            if now - at > limit:
                del self.pending[tid]
                msg.status = -2
                self.soak.ledger.unanswered += 1


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        extra = [f"core.drain_timeout={args.drain_timeout}", 'core.log_level="info"']
        self.relay = Msrpd(args.children, extra)
        self.ledger = Ledger()
        self.rng = random.Random(args.seed)
        self.pairs: list[tuple[Client, Client]] = []
        self.idle: list[Client] = []
        self.prober: Client | None = None
        self.stopping = False

    async def run(self) -> dict[str, object]:
        args = self.args
        self.relay.start()
        try:
            for i in range(args.pairs):
                self.pairs.append((Client(f"a{i}", self), Client(f"b{i}", self)))
            self.idle = [Client(f"i{i}", self) for i in range(args.idle)]
            self.prober = Client("probe", self)
            everyone = [c for pair in self.pairs for c in pair] + self.idle + [self.prober]
            for client in everyone:
                await client.connect()
            keepers = [asyncio.create_task(self.keep(c)) for c in everyone]
            end = time.monotonic() + args.minutes * 60
            tasks = [
                asyncio.create_task(self.traffic(end)),
                asyncio.create_task(self.faults(end)),
                asyncio.create_task(self.progress(end)),
            ]
            await asyncio.gather(*tasks)
            await asyncio.sleep(args.quiet)  # let the last frames and REPORTs arrive
            self.stopping = True
            for task in keepers:
                task.cancel()
            return self.summary()
        finally:
            self.relay.stop()

    async def keep(self, client: Client) -> None:
        """Reconnect a client whose connection died (its worker was killed), and re-AUTH."""
        while True:
            await client.lost.wait()
            if self.stopping:
                return
            await asyncio.sleep(0.2)
            try:
                await client.connect()
            except (OSError, ConnectionError, RuntimeError, TimeoutError) as exc:
                self.ledger.note(f"{client.name}: reconnect failed: {exc}")
                client.lost.set()
                await asyncio.sleep(1.0)

    async def traffic(self, end: float) -> None:
        args = self.args
        tick = 0.05
        per_tick = args.rate * tick
        probe_at = time.monotonic() + args.probe_every
        owed = 0.0
        while time.monotonic() < end:
            owed += per_tick
            while owed >= 1:
                owed -= 1
                for alice, bob in self.pairs:
                    size = args.big_size if self.rng.random() < args.big_share else args.size
                    alice.send(bob, size)
                    bob.send(alice, args.size)
            now = time.monotonic()
            if now >= probe_at and self.prober is not None:
                probe_at = now + args.probe_every
                for client in self.idle:
                    self.prober.send(client, args.size)
            for client in self.clients():
                client.expire(now, 15.0)
            await asyncio.sleep(tick)

    def clients(self) -> list[Client]:
        found = [c for pair in self.pairs for c in pair] + self.idle
        return found + ([self.prober] if self.prober is not None else [])

    async def faults(self, end: float) -> None:
        args = self.args
        next_kill = time.monotonic() + args.kill_every
        next_reload = time.monotonic() + args.reload_every
        while time.monotonic() < end - 5:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            if args.kill_every and now >= next_kill:
                next_kill = now + args.kill_every
                self.kill_one()
            if args.reload_every and now >= next_reload:
                next_reload = now + args.reload_every
                result = await asyncio.to_thread(self.relay._cli, "reload")
                if result.returncode == 0:
                    self.ledger.reloads += 1
                else:
                    self.ledger.note(f"reload failed: {result.stderr.strip()}")

    def kill_one(self) -> None:
        workers = [
            p
            for p in self._workers()
            if "draining" not in " ".join(self._cmdline(p)) and p.status() != "zombie"
        ]
        if not workers:
            return
        victim = self.rng.choice(workers)
        self.ledger.kills.append(time.monotonic())
        victim.send_signal(signal.SIGKILL)

    def _workers(self) -> list[psutil.Process]:
        pid = self.relay.main_pid()
        if pid is None:
            return []
        try:
            return psutil.Process(pid).children()
        except psutil.Error:
            return []

    @staticmethod
    def _cmdline(proc: psutil.Process) -> list[str]:
        try:
            return proc.cmdline()
        except psutil.Error:
            return []

    async def progress(self, end: float) -> None:
        while time.monotonic() < end:
            await asyncio.sleep(min(self.args.report_every, max(0.1, end - time.monotonic())))
            print(json.dumps(self.summary(final=False)), flush=True)

    def summary(self, final: bool = True) -> dict[str, object]:
        ledger = self.ledger
        counts = dict.fromkeys(
            ("sent", "acked", "delivered", "rejected", "reported", "lost_killed", "lost"), 0
        )
        unanswered_killed = 0
        owners = {c.name: c for c in self.clients()}
        for msg in ledger.messages.values():
            counts["sent"] += 1
            if msg.status == 200:
                counts["acked"] += 1
            elif msg.status > 0:
                if msg.status in (481, 408):
                    counts["rejected"] += 1
                else:
                    ledger.other_status[msg.status] = ledger.other_status.get(msg.status, 0) + 1
            elif msg.status < 0:
                unanswered_killed += 1
            if msg.delivered:
                counts["delivered"] += 1
            elif msg.reported:
                counts["reported"] += 1
            elif msg.status == 200 and final:
                sender, receiver = owners[msg.sender], owners[msg.receiver]
                died = msg.receiver_epoch in receiver.died_at or msg.sender_epoch in sender.died_at
                counts["lost_killed" if died else "lost"] += 1
                if not died:
                    ledger.note(f"lost {msg.ident!r} ({msg.sender} -> {msg.receiver})")
        return {
            "final": final,
            **counts,
            "no_answer_connection_died": unanswered_killed,
            "misdelivered": ledger.misdelivered,
            "duplicates": ledger.duplicates,
            "out_of_order": ledger.out_of_order,
            "unanswered": ledger.unanswered,
            "other_status": ledger.other_status,
            "kills": len(ledger.kills),
            "reloads": ledger.reloads,
            "closes_killed": ledger.closes_killed,
            "closes_unexplained": ledger.closes_unexplained,
            "samples": list(ledger.samples) if final else [],
        }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--children", type=int, default=4)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--idle", type=int, default=200, help="idle authenticated sessions")
    p.add_argument("--rate", type=float, default=20.0, help="SENDs/s each way per pair")
    p.add_argument("--size", type=int, default=200, help="body bytes of a small SEND")
    p.add_argument("--big-size", type=int, default=2 << 20, help="body bytes of a large SEND")
    p.add_argument("--big-share", type=float, default=0.002, help="share of Alice's SENDs")
    p.add_argument("--kill-every", type=float, default=30.0, help="seconds; 0: never")
    p.add_argument("--reload-every", type=float, default=120.0, help="seconds; 0: never")
    p.add_argument("--probe-every", type=float, default=30.0, help="idle sessions' probes")
    p.add_argument("--drain-timeout", type=float, default=10.0)
    p.add_argument("--quiet", type=float, default=10.0, help="seconds without sending at the end")
    p.add_argument("--report-every", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the final figures here")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    result = asyncio.run(Soak(args).run())
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    bad = ("misdelivered", "duplicates", "out_of_order", "lost", "closes_unexplained")
    return 1 if any(result[key] for key in bad) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
