"""Accept balancing: a worker passes a new TCP connection to a less loaded worker (SCM_RIGHTS).

Why: SO_REUSEPORT picks the accepting worker by a hash of the connection's addresses. That
evens out over thousands of connections, not over a few busy ones: 8 connections over 2
workers often split 6/2, leaving one core idle while the other is saturated (issue 7).
Kamailio avoids this by handing every connection out from tcp_main.

Rules:
- Only plain TCP, only in connection_made, before any byte is read: the bytes wait in the
  socket for the new owner. TLS connections have already read their handshake; they stay.
- Each worker stores its open connection count in its heartbeat record on every open and
  close. A worker passes a connection on when it holds more than the least loaded RUNNING
  worker of its own generation; the peer list is refreshed once a second (and on accept while
  it is empty, at most every 0.1 s: right after start), the counts are read
  on every accept (one 4-byte load each), plus what we passed that the peer has not taken up
  yet (a burst of accepts would otherwise overshoot).
- The descriptor goes over a Unix datagram socket (accept-<slot>-<generation>.sock), with the
  listening address the connection came in on. If the send fails (peer gone, queue full), the
  connection stays here: it is never dropped for balancing's sake.
- A received connection is never passed on again.
- A retiring worker (reload, retire.py) sends its connections in batches: one datagram with
  up to MAX_BATCH descriptors and, for each, its length-prefixed move message (b"B").
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from ..rundir import accept_path
from ..shm import Counter, Heartbeats, StatsCounters, WorkerState

__all__ = ["MAX_BATCH", "AcceptBalancer", "batch_message"]

logger = logging.getLogger(__name__)

_MAX_MESSAGE = 1 << 17  # b"A" + listening address, or b"M" + a moved connection's state
_LAZY_REFRESH = 0.1  # seconds: with no peer known, look again at most this often
MAX_BATCH = 64
"""Connections (descriptors) in one b"B" datagram."""
_LENGTH = struct.Struct("!I")


def batch_message(messages: list[bytes]) -> bytes:
    """The b"B" datagram for several moved connections, their descriptors in the same order."""
    return b"B" + b"".join(_LENGTH.pack(len(m)) + m for m in messages)


def _split_batch(body: bytes) -> list[bytes]:
    """The move messages of a b"B" datagram; ValueError when it does not parse."""
    messages, pos = [], 0
    while pos < len(body):
        if pos + _LENGTH.size > len(body):
            raise ValueError("truncated batch")
        (size,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if pos + size > len(body):
            raise ValueError("truncated batch")
        messages.append(body[pos : pos + size])
        pos += size
    return messages


class AcceptBalancer:
    """This worker's end of accept balancing.

    Args:
        run_dir: where every worker's accept socket lives.
        slot, generation, index: this worker's slot, generation and heartbeat record.
        heartbeats: the shared heartbeat table.
        counters: this worker's counters (conns_passed, conns_adopted).
        adopt: `adopt(sock, listen_text)` for each connection another worker passed here.
        loop: the running loop.
    """

    def __init__(
        self,
        run_dir: Path,
        slot: int,
        generation: int,
        index: int,
        heartbeats: Heartbeats,
        counters: StatsCounters,
        adopt: Callable[[socket.socket, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.run_dir = run_dir
        self.generation = generation
        self.index = index
        self.heartbeats = heartbeats
        self.counters = counters
        self.adopt = adopt
        self.loop = loop
        self.path = accept_path(run_dir, slot, generation)
        self.peers: list[tuple[int, int, Path]] = []  # (heartbeat index, slot, accept path)
        self.adopt_moved: Callable[[socket.socket, bytes], None] | None = None
        """Takes a connection another worker moved here (colocate.py)."""
        self._refreshed = 0.0
        self._sent: dict[int, tuple[int, int]] = {}  # peer -> (its count then, passed since)
        self._sock: socket.socket | None = None
        self._shut = False
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)

    def start(self) -> None:
        """Listen for passed connections (mode 0600, a stale socket file replaced)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.loop.add_reader(sock.fileno(), self._receive)

    def shut(self) -> bool:
        """Take no more connections (a retiring worker about to exit): remove the socket's
        path, so a sender now fails and keeps its connection, then serve what was queued
        before. True when that was anything: the worker has connections again."""
        if self._sock is None:
            return False
        if not self._shut:
            self._shut = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        return self._receive() > 0

    def close(self) -> None:
        """Stop receiving; connections still queued on the socket are closed by the kernel
        (only RUNNING workers are sent any, and a worker drains before it exits)."""
        if self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if not self._shut:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        self._out.close()

    def refresh(self) -> None:
        """Re-read which workers of this generation are RUNNING (once a second)."""
        peers = []
        for record in self.heartbeats.live():
            if (
                record.state is WorkerState.RUNNING
                and record.generation == self.generation
                and record.index != self.index
                and record.pid != 0
            ):
                path = accept_path(self.run_dir, record.slot, self.generation)
                peers.append((record.index, record.slot, path))
        self.peers = peers
        self._refreshed = time.monotonic()
        self._sent.clear()  # passes older than a second have been taken up (or closed)

    def offer(self, transport: asyncio.Transport, own_conns: int, listen_text: str) -> bool:
        """In connection_made of a plain TCP connection: True when it went to another worker
        (the caller then forgets it), False when it stays here."""
        if not self.peers:
            now = time.monotonic()
            if now - self._refreshed < _LAZY_REFRESH:
                return False
            self.refresh()  # just started: the others may be RUNNING by now
            if not self.peers:
                return False
        index, _slot, path = min(self.peers, key=lambda peer: self._load(peer[0]))
        if self._load(index) >= own_conns:
            return False
        if not self.send_socket(transport, path, b"A" + listen_text.encode()):
            return False
        # The peer holds the socket now: closing our descriptor leaves the connection open.
        self.counters.add(Counter.conns_passed)
        base, passed = self._sent.get(index, (self.heartbeats.conns(index), 0))
        self._sent[index] = (base, passed + 1)
        transport.abort()
        return True

    def send_socket(self, transport: asyncio.Transport, path: Path, message: bytes) -> bool:
        """Send the transport's socket with `message` to the accept socket at `path`."""
        return self.send_sockets([transport], path, message)

    def send_sockets(self, transports: list[asyncio.Transport], path: Path, message: bytes) -> bool:
        """Send the transports' sockets, in order, with `message` in one datagram to the
        accept socket at `path`; False (and nothing sent) when that fails."""
        fds: list[int] = []
        try:
            for transport in transports:
                sock = transport.get_extra_info("socket")
                if sock is None:
                    return False
                fds.append(os.dup(sock.fileno()))
            # sendmsg, not socket.send_fds: send_fds drops its address argument (Python 3.11).
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))
            self._out.sendmsg([message], [rights], 0, str(path))
        except OSError as exc:
            logger.debug("cannot pass connections to %s: %s; keeping them", path, exc)
            return False
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def index_of(self, worker: tuple[int, int]) -> int | None:
        """The heartbeat index of a RUNNING worker (slot, generation) of our generation."""
        slot, generation = worker
        if generation != self.generation:
            return None
        for index, peer_slot, _path in self.peers:
            if peer_slot == slot:
                return index
        return None

    def _load(self, index: int) -> int:
        """A peer's open connections, counting those passed to it that it has not taken up
        yet: in a burst of accepts its own count lags behind, and we would overshoot."""
        conns = self.heartbeats.conns(index)
        sent = self._sent.get(index)
        if sent is None:
            return conns
        base, passed = sent
        if conns >= base + passed:
            del self._sent[index]  # it has caught up
            return conns
        return base + passed

    def _receive(self) -> int:
        """Serve every connection queued on the accept socket; how many there were."""
        sock, taken = self._sock, 0
        while sock is not None:
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, MAX_BATCH)
            except BlockingIOError:
                return taken
            except OSError as exc:
                logger.warning("accept socket: %s", exc)
                return taken
            taken += len(fds)
            if not fds:
                logger.warning("accept socket: a message without a connection; ignored")
            elif data[:1] == b"B":
                self._take_batch(fds, data[1:])
            elif len(fds) > 1:
                logger.warning("accept socket: %d connections in one message; closed", len(fds))
                for fd in fds:
                    os.close(fd)
            else:
                self._take(fds[0], data)
        return taken

    def _take_batch(self, fds: list[int], body: bytes) -> None:
        try:
            messages = _split_batch(body)
            if len(messages) != len(fds):
                raise ValueError(f"{len(messages)} states for {len(fds)} connections")
        except ValueError as exc:
            logger.warning("accept socket: a bad batch (%s); its connections closed", exc)
            for fd in fds:
                os.close(fd)
            return
        for fd, message in zip(fds, messages, strict=True):
            self._take(fd, b"M" + message)

    def _take(self, fd: int, data: bytes) -> None:
        """Serve a passed descriptor, or close it: it is never left open unowned."""
        try:
            conn = socket.socket(fileno=fd)
        except OSError as exc:
            logger.warning("accept socket: a passed descriptor is no socket (%s); closed", exc)
            os.close(fd)
            return
        kind, body = data[:1], data[1:]
        try:
            if conn.family not in (socket.AF_INET, socket.AF_INET6) or (
                conn.type != socket.SOCK_STREAM
            ):
                raise ValueError(f"not a TCP socket: {conn.family!r}, {conn.type!r}")
            if kind == b"A":
                self.counters.add(Counter.conns_adopted)
                self.adopt(conn, body.decode(errors="replace"))
            elif kind == b"M" and self.adopt_moved is not None:
                self.adopt_moved(conn, body)
            else:
                raise ValueError(f"unknown message {data[:16]!r}")
        except Exception as exc:
            logger.warning("cannot take a connection another worker passed (%s); closed", exc)
            conn.close()
