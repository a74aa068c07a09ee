"""End to end in a real browser: headless Chromium chats with a TCP client through msrpd.

The page (page.html, md5.js, page.js), served by the test on 127.0.0.1, speaks MSRP over
`new WebSocket(url, "msrp")` (RFC 7977) to msrpd's wss listener under the default relay
route, from an origin the relay's `[websocket] origins` lists: it AUTHs with a Digest
computed in the page (RFC 4976 §9.1), sends a binary and a UTF-8 text message to a plain TCP
peer through its token (outbound, RFC 4976 §6.4), takes the three the peer sends back to its
token (inbound: text, binary, 24 MiB), then closes. The relay's certificate is a trustme one;
Chromium trusts that one key and nothing else (--ignore-certificate-errors-spki-list). Every
message is checked on both sides: where it went, its bytes, once, in order.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..conformance.peer import QUIET, Peer
from ..integration.relay import PASSWORDS, Relay
from .chromium import Chromium, missing
from .conftest import skip
from .pagehost import PageHost

START_TIMEOUT = 20.0
"""Seconds Chromium gets to start and load the page (a cold start in a container)."""
STEP_TIMEOUT = 10.0
BIG_TIMEOUT = 20.0
"""Seconds for a step of the big message (the page hashes it in JavaScript)."""

OUT_TEXT = "Grüße aus dem Browser ✓ — привет, 日本 🎉\n".encode()
OUT_BINARY = bytes(range(256)) + b"\r\n-------notmine$\r\n\x00\xff" + bytes(range(255, -1, -1))
IN_TEXT = "Antwort vom TCP-Client: ça va? Ελληνικά ✓".encode()
IN_BINARY = bytes((i * 7 + 3) % 256 for i in range(4096))
BIG = 24 << 20
"""A message the TCP peer sends in one SEND, streamed through the relay (over [msrp]
max_body)."""
MD5_PROBE = "MD5 über UTF-8, länger als ein Block: ✓ мир 🎉 " * 4


@dataclass
class WssRelay:
    relay: Relay
    port: int
    spki: str
    """base64 SHA-256 of the relay certificate's public key, for Chromium."""


def _spki_hash(pem: bytes) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def host() -> Iterator[PageHost]:
    """The test's web server; the test gives it the page's config before the browser asks.
    Without a browser the test skips here, before any relay starts."""
    reason = missing()
    if reason is not None:
        skip(reason)
    with PageHost({}) as found:
        yield found


def start_relay(tmp: Path, origins: list[str], **websocket: object) -> WssRelay:
    """msrpd with the default relay route, plain TCP, TLS, ws and wss listeners (wss on the
    [tls] certificate), taking WebSocket handshakes from `origins` only; `websocket`: more of
    the [websocket] section."""
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp / "relay.pem", tmp / "relay.key"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    relay = Relay(
        msrp={"route": None},
        tls={"certificate": str(cert_file), "private_key": str(key_file)},
        websocket={"origins": origins, **websocket},
    )
    result = relay.start()
    if result.returncode != 0:
        relay.stop()
        raise AssertionError(result.stderr + relay.log())
    assert relay.wss_port is not None
    return WssRelay(relay, relay.wss_port, _spki_hash(cert.cert_chain_pems[0].bytes()))


@pytest.fixture
def wss_relay(tmp_path: Path, host: PageHost) -> Iterator[WssRelay]:
    """The relay, taking handshakes from the test's page only (its Origin, RFC 6454)."""
    found = start_relay(tmp_path, [host.origin])
    try:
        yield found
    finally:
        found.relay.stop()


class Page:
    """The browser's reports, one at a time, with everything needed to explain a failure."""

    def __init__(self, host: PageHost, browser: Chromium, relay: Relay) -> None:
        self.host, self.browser, self.relay = host, browser, relay
        self.seen: list[dict[str, Any]] = []

    def next(self, timeout: float = STEP_TIMEOUT, kind: str = "anything") -> dict[str, Any]:
        try:
            got = self.host.event(timeout)
        except TimeoutError:
            pytest.fail(f"the page never reported {kind}\n{self.story()}")
        self.seen.append(got)
        return got

    def expect(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        got = self.next(timeout, repr(kind))
        assert got["kind"] == kind, f"expected {kind!r}, got {got}\n{self.story()}"
        return got

    def story(self) -> str:
        log = self.browser.log().splitlines()
        console = [
            line for line in log if "CONSOLE" in line or ("ERROR:" in line and "dbus" not in line)
        ]
        return "\n".join(
            [
                f"page events: {self.seen + self.host.pending()}",
                "chromium:",
                *console[-20:],
                "msrpd log (tail):",
                *self.relay.log().splitlines()[-30:],
            ]
        )


def _start_page(host: PageHost, relay: Relay, spki: str) -> Page:
    """Chromium on the page, or a loud skip when the browser cannot start."""
    try:
        browser = Chromium(f"{host.origin}/page.html", trusted_spki=spki)
    except OSError as exc:
        skip(f"chromium could not be started: {exc}")
    page = Page(host, browser, relay)
    deadline = time.monotonic() + START_TIMEOUT
    while not host.pending():
        code = browser.exited()
        if code is not None:
            tail = "\n".join(browser.log().splitlines()[-10:])
            browser.close()
            skip(f"chromium exited with {code} before loading the page:\n{tail}")
        if time.monotonic() > deadline:
            browser.close()
            pytest.fail(f"chromium ran but never loaded the page\n{page.story()}")
        time.sleep(0.05)
    return page


def _receive_message(
    page: Page, mid: str, ctype: str, body: bytes, paths: tuple[str, str]
) -> list[dict[str, Any]]:
    """The page's reports of one message: its chunks, contiguous and in order (RFC 4975
    §7.1.1), then the whole message's length and SHA-256 as the page put it together."""
    parts: list[dict[str, Any]] = []
    start = 1
    while not parts or parts[-1]["flag"] == "+":
        got = page.expect("received", BIG_TIMEOUT)
        assert (got["method"], got["message_id"], got["content_type"]) == ("SEND", mid, ctype)
        assert (got["to_path"], got["from_path"]) == paths
        end = start + got["length"] - 1
        first, _, rest = got["byte_range"].partition("-")
        last, _, total = rest.partition("/")
        assert (int(first), int(total)) == (start, len(body)), (got["byte_range"], start)
        # The range-end is the chunk's own, or `*`, or, for a chunk interrupted with `+`,
        # the end it was meant to have (RFC 4975 §7.1.1: the end-line decides).
        assert last in ("*", str(end)) or (got["flag"] == "+" and int(last) > end), got
        start = end + 1
        parts.append(got)
    assert parts[-1]["flag"] == "$" and start == len(body) + 1
    whole = page.expect("message", BIG_TIMEOUT)
    assert (whole["message_id"], whole["length"]) == (mid, len(body))
    assert whole["sha256"] == hashlib.sha256(body).hexdigest()
    return parts


def _check_send(frame: Any, body: bytes, message_id: str, ctype: str) -> None:
    assert frame.method == b"SEND", frame.buf
    assert frame.header("Message-ID") == message_id.encode(), frame.buf
    assert frame.header("Byte-Range") == f"1-{len(body)}/{len(body)}".encode(), frame.buf
    assert frame.header("Content-Type") == ctype.encode(), frame.buf


def _config(
    relay: WssRelay,
    peer_uri: str,
    outbound: list[tuple[str, str, bytes, bool]],
    close_after: int | None = None,
) -> dict[str, Any]:
    """The page's orders; it closes its WebSocket after `close_after` whole messages in."""
    return {
        "close_after": close_after,
        "ws_url": f"wss://127.0.0.1:{relay.port}/",
        "relay_uri": f"msrps://127.0.0.1:{relay.port};ws",
        # RFC 7977 §5.2: a browser cannot listen, so its URI names an unresolvable host.
        "self_uri": f"msrps://{secrets.token_hex(4)}.invalid:2855/{secrets.token_hex(6)};ws",
        "user": "alice",
        "password": PASSWORDS["alice"],
        "md5_probe": MD5_PROBE,
        "peer_uri": peer_uri,
        "outbound": [
            {"message_id": m, "content_type": c, "body": base64.b64encode(b).decode(), "as_text": t}
            for m, c, b, t in outbound
        ],
    }


def _check_md5(page: Page) -> None:
    md5 = page.expect("md5", START_TIMEOUT)
    assert md5["wrong"] == [], "the page's MD5 fails RFC 1321's vectors"
    assert md5["utf8"] == hashlib.md5(MD5_PROBE.encode()).hexdigest()


def _authenticated(page: Page, port: int) -> str:
    """The page's MD5 checked, its WebSocket open and its AUTH done: its Use-Path."""
    _check_md5(page)
    assert page.expect("open")["protocol"] == "msrp"  # RFC 7977 §4.1
    auth = page.expect("auth")
    assert auth["code"] == 200, page.story()
    use_path = auth["use_path"]
    # RFC 7977 §5.2: the relay names itself to a WebSocket client with ;ws.
    assert use_path.startswith(f"msrps://127.0.0.1:{port}/"), use_path
    assert use_path.endswith(";ws") and " " not in use_path, use_path
    return str(use_path)


def test_a_browser_chats_with_a_tcp_client_through_msrpd(
    wss_relay: WssRelay, host: PageHost
) -> None:
    # The binary message first: the text one is the browser's last, so the relay answers in
    # text where it can (wsconn.py: text when the client's last message was text).
    outbound = [
        ("out-binary", "application/octet-stream", OUT_BINARY, False),
        ("out-text", "text/plain; charset=utf-8", OUT_TEXT, True),
    ]
    inbound = [
        ("in-text", "text/plain; charset=utf-8", IN_TEXT, True),
        ("in-binary", "application/octet-stream", IN_BINARY, False),
        ("in-big", "application/octet-stream", os.urandom(BIG), False),
    ]
    with Peer("bob") as bob:
        host.config.update(_config(wss_relay, bob.uri, outbound, close_after=len(inbound)))
        self_uri = host.config["self_uri"]
        page = _start_page(host, wss_relay.relay, wss_relay.spki)
        try:
            use_path = _authenticated(page, wss_relay.port)

            # Outbound: both SENDs reach the TCP peer over a connection the relay opened, in
            # order, From-Path naming the relay's token before the browser.
            for mid, ctype, body, _ in outbound:
                got = bob.recv(STEP_TIMEOUT)
                _check_send(got.frame, body, mid, ctype)
                assert got.body == body
                assert got.frame.header("To-Path") == bob.uri.encode()
                assert got.frame.header("From-Path") == f"{use_path} {self_uri}".encode()
            for mid, *_ in outbound:
                sent = page.expect("sent")
                assert (sent["message_id"], sent["code"]) == (mid, 200)

            # Inbound: the peer answers along the From-Path it got, over the same connection.
            conn = bob.accept()
            tids = [
                conn.request(
                    "SEND",
                    f"{use_path} {self_uri}",
                    [
                        ("Message-ID", m),
                        ("Byte-Range", f"1-{len(b)}/{len(b)}"),
                        ("Content-Type", c),
                    ],
                    b,
                )
                for m, c, b, _ in inbound
            ]
            for tid in tids:
                answer = conn.recv(STEP_TIMEOUT).frame
                assert (answer.tid, answer.code) == (tid, 200), answer.buf
            # Each arrives once, in order, known by its Message-ID and bytes (its transaction
            # id is the relay's choice, RFC 4976 §6.4.1).
            for mid, ctype, body, as_text in inbound:
                paths = (self_uri, f"{use_path} {bob.uri}")
                first, *more = _receive_message(page, mid, ctype, body, paths)
                if len(body) < BIG:  # whole in one chunk: just as the peer sent it
                    assert more == []
                    assert base64.b64decode(first["body"]) == body
                    assert first["text"] is as_text, "text iff UTF-8 (RFC 7977 §4.2)"

            # The page closes (RFC 6455 §7: 1000, answered by the relay's close frame).
            closed = page.expect("close")
            assert (closed["code"], closed["clean"]) == (1000, True), closed
            # Once each: nothing more reached either side (the browser's 200s end at the
            # relay, which answered the peer hop by hop, RFC 4976 §6.4.1).
            time.sleep(QUIET)
            assert host.pending() == [], page.story()
            with pytest.raises(TimeoutError):
                conn.recv(QUIET)
            # The browser's token died with its connection (RFC 4976 §6.3).
            late = conn.request("SEND", f"{use_path} {self_uri}", [("Message-ID", "late")], b"x")
            answer = conn.recv(STEP_TIMEOUT).frame
            assert (answer.tid, answer.code) == (late, 481), answer.buf
        finally:
            page.browser.close()


def test_a_page_from_another_origin_is_refused(tmp_path: Path, host: PageHost) -> None:
    """The [websocket] origins allow-list against a real browser's Origin header: the page's
    WebSocket never opens, so it never gets to send MSRP."""
    net = start_relay(tmp_path, ["https://chat.example.com"])
    try:
        with Peer("bob") as bob:
            host.config.update(_config(net, bob.uri, [("m", "text/plain", b"hi", True)]))
            page = _start_page(host, net.relay, net.spki)
            try:
                _check_md5(page)
                # The error event and the close event, in either order.
                failed = {got["kind"]: got for got in (page.next(), page.next())}
                assert "WebSocket to wss://" in failed["error"]["message"], failed
                assert failed["close"]["code"] == 1006, failed  # no WebSocket: no close frame
                time.sleep(QUIET)
                assert host.pending() == [], page.story()
                assert not bob.connected(0.1)
            finally:
                page.browser.close()
    finally:
        net.relay.stop()


def test_a_message_over_the_websocket_limit_reaches_the_browser_in_chunks(
    tmp_path: Path, host: PageHost
) -> None:
    """Issue 15: a frame larger than the WebSocket side's message limit is re-chunked (RFC
    4975 §7.1.1: same Message-ID, contiguous Byte-Range, `+` then `$`), each chunk one
    WebSocket message (RFC 7977 §5.1) within [websocket] max_message."""
    limit = 1 << 20
    net = start_relay(tmp_path, [host.origin], max_message=limit)
    body = os.urandom(4 << 20)
    try:
        with Peer("bob") as bob:
            host.config.update(_config(net, bob.uri, [("hello", "text/plain", b"hello", True)]))
            self_uri = host.config["self_uri"]
            page = _start_page(host, net.relay, net.spki)
            try:
                use_path = _authenticated(page, net.port)
                assert bob.recv(STEP_TIMEOUT).body == b"hello"
                assert page.expect("sent")["code"] == 200
                conn = bob.accept()
                headers = [("Message-ID", "big"), ("Byte-Range", f"1-{len(body)}/{len(body)}")]
                headers.append(("Content-Type", "application/octet-stream"))
                tid = conn.request("SEND", f"{use_path} {self_uri}", headers, body)
                answer = conn.recv(STEP_TIMEOUT).frame
                assert (answer.tid, answer.code) == (tid, 200), answer.buf
                paths = (self_uri, f"{use_path} {bob.uri}")
                parts = _receive_message(page, "big", "application/octet-stream", body, paths)
                sizes = [part["wire"] for part in parts]
                why = f"WebSocket messages of {sizes} bytes to the browser; max_message {limit}"
                assert max(sizes) <= limit and len(parts) >= 4, why
                time.sleep(QUIET)
                assert host.pending() == [], page.story()
            finally:
                page.browser.close()
    finally:
        net.relay.stop()
