"""Transport adapters (msrpd/workers/transports/): TcpWire, TlsWire and WsWire over real
sockets on 127.0.0.1, TLS with a trustme certificate, WebSocket against a wsproto client, on
uvloop (as workers run) and asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Request

from msrpd.config import TlsSettings, WebSocketSettings
from msrpd.workers.peers import format_peer
from msrpd.workers.transports.base import Wire
from msrpd.workers.transports.tcp import TcpWire
from msrpd.workers.transports.tls import TlsWire, client_context, server_context
from msrpd.workers.transports.tlsstream import PIECE, TlsStream
from msrpd.workers.transports.ws import WsWire

from .hubs import LOOPS, run, until

HIGH = 64 * 1024


class Served(asyncio.Protocol):
    """The server side, as conn.py drives a wire: attach it, read through wire.receive."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.peer = ""
        self.received = bytearray()
        self.eof = False
        self.lost = asyncio.get_running_loop().create_future()
        self.writing: list[str] = []
        """"pause" and "resume", as the transport asked."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = self.wire.attach(transport, self.received.extend, HIGH, lambda tid, n: None)

    def data_received(self, data: bytes) -> None:
        self.wire.receive(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.writing.append("pause")

    def resume_writing(self) -> None:
        self.writing.append("resume")


async def serve(
    wire: Wire, tls: ssl.SSLContext | None = None, ca: Path | None = None
) -> tuple[asyncio.Server, Served, asyncio.StreamReader, asyncio.StreamWriter]:
    """A server holding `wire` and one client connected to it; the server side is attached
    (behind a TlsStream with `tls`, as the workers serve it)."""
    served: list[Served] = []

    def factory() -> asyncio.Protocol:
        served.append(Served(wire))
        if tls is None:
            return served[0]
        return TlsStream(served[0], tls, memoryview(bytearray(1 << 18)), 10.0)

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client_tls = None if ca is None else ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls, server_hostname="localhost" if tls else None
    )
    await until(lambda: bool(served) and bool(served[0].peer))
    return server, served[0], reader, writer


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    """A relay certificate for localhost and 127.0.0.1, and the CA that issued it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    where = tmp_path_factory.mktemp("tls")
    cert_file, key_file, ca_file = where / "cert.pem", where / "key.pem", where / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    ca.cert_pem.write_to_path(ca_file)
    return TlsSettings(certificate=cert_file, private_key=key_file, ca=ca_file)


def test_names_and_uris() -> None:
    tcp, tls = TcpWire("tcp:127.0.0.1:2855"), TlsWire("tls:[::1]:2856")
    assert (tcp.scheme, tcp.kind, tcp.movable) == ("msrp", "tcp", True)
    assert (tls.scheme, tls.kind, tls.movable) == ("msrps", "tls", False)
    assert tcp.self_uri() == b"msrp://127.0.0.1:2855;tcp"
    # RFC 4975 §9: the transport parameter says tcp over TLS too.
    assert tls.self_uri() == b"msrps://[::1]:2856;tcp"
    assert TcpWire().self_uri() == b""  # outbound: no listening socket
    assert format_peer("::1", 7) == "[::1]:7" and format_peer("10.0.0.1", 7) == "10.0.0.1:7"


def test_unattached_wire_has_nothing_to_do() -> None:
    wire = TcpWire()
    assert wire.transport is None and wire.buffered() == 0
    assert not wire.direct  # nothing to call the reader for yet (conn.data_received)
    wire.pause_reading()
    wire.resume_reading()
    wire.close()
    wire.abort()
    with pytest.raises(RuntimeError):
        wire.send(b"x")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tcp_reads_and_writes_through_the_wire(loop_kind: str) -> None:
    async def main() -> None:
        wire = TcpWire("tcp:127.0.0.1:2855")
        server, served, reader, writer = await serve(wire)
        assert served.peer == f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
        # receive is the feed as given: the connection may call its reader itself.
        assert wire.direct and wire.receive == served.received.extend
        writer.write(b"MSRP a SEND\r\n")
        await until(lambda: bytes(served.received) == b"MSRP a SEND\r\n")
        wire.send(b"MSRP a 200 OK\r\n")
        wire.send(memoryview(b"-------a$\r\n"))
        assert await reader.readexactly(26) == b"MSRP a 200 OK\r\n-------a$\r\n"
        assert wire.buffered() == 0
        wire.close()
        assert await reader.read() == b""  # EOF after what was written
        await served.lost
        writer.close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_pause_reading_stops_delivery_until_resumed(loop_kind: str) -> None:
    async def main() -> None:
        wire = TcpWire()
        server, served, _reader, writer = await serve(wire)
        wire.pause_reading()
        writer.write(b"held")
        await writer.drain()
        await asyncio.sleep(0.1)
        assert served.received == b""
        wire.resume_reading()
        await until(lambda: served.received == b"held")
        writer.close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_buffered_counts_what_the_kernel_did_not_take_and_abort_drops_it(loop_kind: str) -> None:
    async def main() -> None:
        wire = TcpWire()
        server, served, reader, writer = await serve(wire)
        wire.send(b"x" * (32 << 20))  # far more than two socket buffers: the peer reads nothing
        assert wire.buffered() > 0
        wire.abort()
        assert await served.lost is None
        got = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(1 << 20):
                got += len(chunk)
        assert got < 32 << 20  # what the kernels held, not what the transport buffered
        writer.close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_wire_over_real_tls(loop_kind: str, certs: TlsSettings) -> None:
    async def main() -> None:
        wire = TlsWire("tls:127.0.0.1:2856")
        server, served, reader, writer = await serve(wire, server_context(certs), certs.ca)
        assert served.peer.startswith("127.0.0.1:")
        assert wire.direct and wire.receive == served.received.extend  # plaintext, as TCP
        writer.write(b"MSRP b SEND\r\n")
        await until(lambda: bytes(served.received) == b"MSRP b SEND\r\n")
        wire.send(b"MSRP b 200 OK\r\n")
        assert await reader.readexactly(15) == b"MSRP b 200 OK\r\n"
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        wire.close()
        await served.lost
        writer.close()
        server.close()

    run(loop_kind, main)


async def serve_tls_reads(
    certs: TlsSettings, buffer: memoryview, clients: int
) -> tuple[asyncio.Server, list[tuple[Served, asyncio.StreamReader, asyncio.StreamWriter]]]:
    """A TLS server whose connections read through TlsStreams into `buffer`, and `clients`
    clients connected to it, each with its own server side (matched by port)."""
    served: list[Served] = []
    context = server_context(certs)

    def factory() -> TlsStream:
        conn = Served(TlsWire("tls:127.0.0.1:2856"))
        served.append(conn)
        return TlsStream(conn, context, buffer, 10.0)

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client_tls = ssl.create_default_context(cafile=str(certs.ca))
    pairs = []
    for _ in range(clients):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls, server_hostname="localhost"
        )
        pairs.append((reader, writer))
    await until(lambda: len(served) == clients and all(s.peer for s in served))
    by_peer = {s.peer: s for s in served}
    return server, [
        (by_peer[f"127.0.0.1:{w.get_extra_info('sockname')[1]}"], r, w) for r, w in pairs
    ]


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_reads_share_one_buffer(loop_kind: str, certs: TlsSettings) -> None:
    """Two TLS connections read through one buffer far smaller than what they are sent, both
    sending before either is read: each gets exactly its own bytes in order, the reads did
    land in the shared buffer, and the peer's close reaches each connection."""

    async def main() -> None:
        backing = bytearray(4096)
        server, conns = await serve_tls_reads(certs, memoryview(backing), 2)
        sent = [b"".join(b"%c%06d\n" % (tag, n) for n in range(4000)) for tag in b"ab"]
        for (_, _, writer), data in zip(conns, sent, strict=True):
            writer.write(data)  # 32,000 bytes each: the buffer fills several times
        total = sum(map(len, sent))
        await until(lambda: sum(len(s.received) for s, _, _ in conns) >= total)
        assert [bytes(s.received) for s, _, _ in conns] == sent
        assert any(backing)  # what was read was decrypted into the shared buffer
        for served, _, writer in conns:
            writer.close()
            assert await served.lost is None
            assert served.eof  # the peer's close_notify
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_reads_pass_write_pausing_on(loop_kind: str, certs: TlsSettings) -> None:
    """Writing pauses and resumes reach the connection behind a TlsStream (its outbox's flow
    control depends on them)."""

    async def main() -> None:
        server, [(served, reader, writer)] = await serve_tls_reads(
            certs, memoryview(bytearray(4096)), 1
        )
        # The TLS stream encrypts a write at once and hands it to the socket's transport, which
        # the first fills past HIGH: paused, once, until it has written them both.
        size = 8 << 20
        served.wire.send(b"x" * size)
        served.wire.send(b"y" * size)
        assert served.writing == ["pause"]
        assert await reader.readexactly(2 * size) == b"x" * size + b"y" * size
        await until(lambda: served.writing == ["pause", "resume"])
        writer.close()
        await served.lost
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
@pytest.mark.parametrize("size", [300, PIECE + 5000, 3 * PIECE + 7])
def test_tls_buffered_is_exactly_what_a_shut_socket_never_delivers(
    loop_kind: str, certs: TlsSettings, size: int
) -> None:
    """Writes of `size` bytes (within one TLS record, and over several) to a client that reads
    nothing, until the transport holds a lot; then the socket is shut for writing as a stop's
    give-up does. The client then reads until the end: what it gets is exactly the bytes sent
    but `buffered()` at the shut, none of the rest (a record half in the kernel never
    decrypts), so a stop's reports are neither short nor duplicated (RFC 4975 §7.1.2)."""

    async def main() -> None:
        wire = TlsWire("tls:127.0.0.1:2856")
        server, _, _, writer = await serve(wire, server_context(certs), certs.ca)
        client = Collected()  # the reader's own buffer: a StreamReader raises before it
        writer.transport.set_protocol(client)
        writer.transport.pause_reading()  # the client reads nothing until the shut
        stream = bytearray()
        while wire.buffered() < 2 << 20:
            chunk = (b"%08d" % (len(stream) // size)).ljust(size, b".")
            wire.send(chunk)
            stream += chunk
        wire.shut_write()
        unsent = wire.buffered()
        assert 0 < unsent < len(stream)
        writer.transport.resume_reading()
        await asyncio.wait_for(client.ended, 10)
        assert len(client.got) == len(stream) - unsent
        assert client.got == stream[: len(client.got)]
        wire.abort()
        writer.close()
        server.close()

    run(loop_kind, main)


class Collected(asyncio.Protocol):
    """A client that keeps what it reads, until the end (an EOF, or an error: a TLS record
    cut short by the shut)."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.ended = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.got += data

    def eof_received(self) -> bool | None:
        if not self.ended.done():
            self.ended.set_result(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_tls_stream_handshake_failures_never_reach_the_connection(
    loop_kind: str, certs: TlsSettings
) -> None:
    """Bad input: plain text to a TLS listener gets the socket closed (no TLS record: it
    spoke no TLS); a handshake never started is closed at its timeout; a client stream whose peer's
    certificate does not verify fails its handshake with that reason. No connection object
    ever sees connection_made or connection_lost."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        apps: list[Served] = []

        def factory() -> TlsStream:
            apps.append(Served(TlsWire("tls:127.0.0.1:2856")))
            return TlsStream(apps[-1], server_context(certs), memoryview(bytearray(4096)), 0.5)

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"MSRP a SEND\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        began = loop.time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # says nothing
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.4 < loop.time() - began < 3
        writer.close()
        assert [app.peer for app in apps] == ["", ""] and not any(a.lost.done() for a in apps)
        # A client stream that trusts another CA: the server's certificate does not verify.
        other = trustme.CA()
        client_ctx = ssl.create_default_context()
        other.configure_trust(client_ctx)
        app = Served(TlsWire())
        stream = TlsStream(app, client_ctx, memoryview(bytearray(4096)), 5.0, "localhost")
        await loop.create_connection(lambda: stream, "127.0.0.1", port)
        with pytest.raises(ssl.SSLCertVerificationError):
            await stream.handshaken()
        await asyncio.sleep(0.05)
        assert app.peer == "" and not app.lost.done()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_bad_record_ends_the_stream_and_a_write_to_it_raises_nothing(
    loop_kind: str, certs: TlsSettings
) -> None:
    """Bad input: a peer sends an app-data record that does not decrypt (a bad MAC). Its
    stream ends (the connection hears the TLS error), and a write to it at any moment from
    then on (another connection's frame for this peer, flushed in the same read) is dropped:
    an exception there would end the writer's connection instead."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wire = TlsWire("tls:127.0.0.1:2856")
        served = Served(wire)
        streams: list[TlsStream] = []

        def factory() -> TlsStream:
            streams.append(
                TlsStream(served, server_context(certs), memoryview(bytearray(4096)), 5.0)
            )
            return streams[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cafile=str(certs.ca))

        def connect() -> ssl.SSLSocket:  # a blocking client, in a thread
            raw = socket.create_connection(("127.0.0.1", port))
            return client_ctx.wrap_socket(raw, server_hostname="localhost")

        client = await asyncio.to_thread(connect)
        await until(lambda: bool(served.peer))
        os.write(client.fileno(), b"\x17\x03\x03\x00\x20" + b"A" * 32)  # under its TLS
        raised = []
        deadline = loop.time() + 5
        while not served.lost.done():  # every loop iteration until the stream is gone
            assert loop.time() < deadline, f"the stream did not end; writes raised {raised[:3]}"
            try:
                wire.send(b"MSRP x SEND\r\n-------x$\r\n")
            except Exception as exc:
                raised.append(exc)
            await asyncio.sleep(0)
        assert raised == []
        assert isinstance(served.lost.result(), ssl.SSLError)
        assert streams[0].error is served.lost.result()
        client.close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_ws_buffered_counts_whole_frames_not_in_the_kernel(loop_kind: str) -> None:
    """WsWire.buffered() counts MSRP bytes, by whole frames: the client that reads nothing
    until the socket is shut then gets exactly the frames sent but the last `buffered()`
    bytes' worth (a message half in the kernel never reaches it), so a stop neither loses
    nor duplicates (RFC 4975 §7.1.2)."""

    async def main() -> None:
        wire = WsWire("ws:127.0.0.1:8080", WebSocketSettings(), secure=False)
        server, _, reader, writer = await serve(wire)
        assert not wire.direct  # its receive decodes WebSocket frames before the reader
        client = WSConnection(ConnectionType.CLIENT)
        writer.write(client.send(Request(host="r", target="/", subprotocols=["msrp"])))
        client.receive_data(await reader.read(65536))
        assert isinstance(next(client.events()), AcceptConnection)
        proto = Collected()
        writer.transport.set_protocol(proto)
        writer.transport.pause_reading()
        frames: list[bytes] = []
        while wire.buffered() < 1 << 20:
            n = len(frames)
            frames.append(b"MSRP t%d SEND\r\n\r\n%s\r\n-------t%d$\r\n" % (n, b"." * (n % 900), n))
            wire.send(frames[-1])
        wire.shut_write()
        unsent = wire.buffered()
        writer.transport.resume_reading()
        await asyncio.wait_for(proto.ended, 10)
        client.receive_data(bytes(proto.got))
        got, part = [], b""  # whole messages: wsproto hands a partial one's bytes too
        for event in client.events():
            if isinstance(event, BytesMessage):
                part += event.data
                if event.message_finished:
                    got.append(part)
                    part = b""
        assert 0 < len(got) < len(frames)
        assert got == frames[: len(got)]
        assert sum(map(len, frames[len(got) :])) == unsent
        wire.abort()
        writer.close()
        server.close()

    run(loop_kind, main)


def test_tls_contexts(certs: TlsSettings) -> None:
    server = server_context(certs)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_NONE  # client certificates are optional
    mutual = TlsSettings(certs.certificate, certs.private_key, certs.ca, verify_client=True)
    assert server_context(mutual).verify_mode == ssl.CERT_REQUIRED
    client = client_context(certs)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    with pytest.raises(ssl.SSLError):
        server_context(TlsSettings())  # a tls listener needs a certificate


def test_ws_names_and_uris() -> None:
    ws = WsWire("ws:127.0.0.1:8080", WebSocketSettings(), secure=False)
    wss = WsWire("wss:[::1]:443", WebSocketSettings(), secure=True)
    assert (ws.scheme, ws.kind, ws.movable) == ("msrp", "ws", False)
    assert (wss.scheme, wss.kind, wss.movable) == ("msrps", "wss", False)
    # RFC 7977 §5.2: the relay's URI toward a WebSocket client names the ws transport.
    assert ws.self_uri() == b"msrp://127.0.0.1:8080;ws"
    assert wss.self_uri() == b"msrps://[::1]:443;ws"


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_ws_wire_upgrades_frames_and_ticks(loop_kind: str) -> None:
    async def main() -> None:
        settings = WebSocketSettings(upgrade_timeout=5.0, ping_interval=2.0)
        wire = WsWire("ws:127.0.0.1:8080", settings, secure=False)
        server, served, reader, writer = await serve(wire)
        client = WSConnection(ConnectionType.CLIENT)

        async def events() -> list[object]:
            client.receive_data(await reader.read(65536))
            return list(client.events())

        now = time.monotonic()
        assert wire.tick(now + 1, now) == ""  # upgrading, within upgrade_timeout
        writer.write(client.send(Request(host="r", target="/", subprotocols=["msrp"])))
        (accepted,) = await events()
        assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "msrp"
        writer.write(client.send(BytesMessage(data=b"MSRP a SEND\r\n")))
        await until(lambda: bytes(served.received) == b"MSRP a SEND\r\n")
        wire.send(b"MSRP a 200 OK\r\n-------a$\r\nMSRP b 200 OK\r\n-------b$\r\n")
        got = await events()
        assert [e.data for e in got] == [  # type: ignore[attr-defined]
            b"MSRP a 200 OK\r\n-------a$\r\n",
            b"MSRP b 200 OK\r\n-------b$\r\n",
        ]
        assert wire.tick(time.monotonic() + 10, 0.0) == ""  # quiet: pinged, not closed
        (ping,) = await events()
        assert isinstance(ping, Ping)
        wire.close()
        (close,) = await events()
        assert isinstance(close, CloseConnection) and close.code == 1000
        assert await reader.read() == b""
        await served.lost
        writer.close()
        server.close()

    run(loop_kind, main)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_ws_wire_upgrade_deadline(loop_kind: str) -> None:
    async def main() -> None:
        wire = WsWire("ws:127.0.0.1:8080", WebSocketSettings(upgrade_timeout=1.0), secure=False)
        server, _served, _reader, writer = await serve(wire)
        assert wire.tick(time.monotonic() + 2, 0.0) == "upgrade too slow"
        writer.close()
        server.close()

    run(loop_kind, main)
