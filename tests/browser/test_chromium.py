"""End to end in a real browser: headless Chromium chats with a TCP client through msrpd.

The page (page.html, md5.js, page.js), served by the test on 127.0.0.1, speaks MSRP over
`new WebSocket(url, "msrp")` (RFC 7977) to msrpd's wss listener under the default relay
route: it AUTHs with a Digest computed in the page (RFC 4976 §9.1), sends a UTF-8 text
message and a binary one to a plain TCP peer through its token (outbound, RFC 4976 §6.4),
and answers the two messages the peer sends back to its token (inbound). The relay's
certificate is a trustme one; Chromium trusts that one key and nothing else
(--ignore-certificate-errors-spki-list). Every message is checked on both sides: where it
went, its bytes, once, in order.
"""

from __future__ import annotations

import base64
import hashlib
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
from ..integration.relay import PASSWORDS, Relay, free_port
from .chromium import Chromium, missing
from .conftest import skip
from .pagehost import PageHost

START_TIMEOUT = 20.0
"""Seconds Chromium gets to start and load the page (a cold start in a container)."""
STEP_TIMEOUT = 10.0

OUT_TEXT = "Grüße aus dem Browser ✓ — привет, 日本 🎉\n".encode()
OUT_BINARY = bytes(range(256)) + b"\r\n-------notmine$\r\n\x00\xff" + bytes(range(255, -1, -1))
IN_TEXT = "Antwort vom TCP-Client: ça va? Ελληνικά ✓".encode()
IN_BINARY = bytes((i * 7 + 3) % 256 for i in range(4096))
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
def wss_relay(tmp_path: Path) -> Iterator[WssRelay]:
    """msrpd with the default relay route, a wss listener on the [tls] certificate, and a plain
    TCP listener."""
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    relay = Relay(
        msrp={"route": None},
        tls={"certificate": str(cert_file), "private_key": str(key_file)},
    )
    port = free_port()
    listen = relay.sections["core"]["listen"]
    assert isinstance(listen, list)
    listen.append(f"wss:127.0.0.1:{port}")
    relay.write_config()
    try:
        result = relay.start()
        assert result.returncode == 0, result.stderr + relay.log()
        yield WssRelay(relay, port, _spki_hash(cert.cert_chain_pems[0].bytes()))
    finally:
        relay.stop()


class Page:
    """The browser's reports, one at a time, with everything needed to explain a failure."""

    def __init__(self, host: PageHost, browser: Chromium, relay: Relay) -> None:
        self.host, self.browser, self.relay = host, browser, relay
        self.seen: list[dict[str, Any]] = []

    def expect(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict[str, Any]:
        try:
            got = self.host.event(timeout)
        except TimeoutError:
            pytest.fail(f"the page never reported {kind!r}\n{self.story()}")
        self.seen.append(got)
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
    """Chromium on the page, or a loud skip when the browser is missing or cannot start."""
    reason = missing()
    if reason is not None:
        skip(reason)
    browser = Chromium(f"{host.origin}/page.html", trusted_spki=spki)
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


def _check_send(frame: Any, body: bytes, message_id: str, ctype: str) -> None:
    assert frame.method == b"SEND", frame.buf
    assert frame.header("Message-ID") == message_id.encode(), frame.buf
    assert frame.header("Byte-Range") == f"1-{len(body)}/{len(body)}".encode(), frame.buf
    assert frame.header("Content-Type") == ctype.encode(), frame.buf


def test_a_browser_chats_with_a_tcp_client_through_msrpd(wss_relay: WssRelay) -> None:
    relay_uri = f"msrps://127.0.0.1:{wss_relay.port};ws"
    # RFC 7977 §5.2: a browser cannot listen, so its URI names an unresolvable host.
    self_uri = f"msrps://{secrets.token_hex(4)}.invalid:2855/{secrets.token_hex(6)};ws"
    outbound = [
        ("out-text", "text/plain; charset=utf-8", OUT_TEXT, True),
        ("out-binary", "application/octet-stream", OUT_BINARY, False),
    ]
    inbound = [
        ("in-text", "text/plain; charset=utf-8", IN_TEXT),
        ("in-binary", "application/octet-stream", IN_BINARY),
    ]
    config = {
        "ws_url": f"wss://127.0.0.1:{wss_relay.port}/",
        "relay_uri": relay_uri,
        "self_uri": self_uri,
        "user": "alice",
        "password": PASSWORDS["alice"],
        "md5_probe": MD5_PROBE,
        "outbound": [
            {
                "message_id": mid,
                "content_type": ct,
                "body": base64.b64encode(b).decode(),
                "as_text": t,
            }
            for mid, ct, b, t in outbound
        ],
    }
    with Peer("bob") as bob, PageHost({**config, "peer_uri": bob.uri}) as host:
        page = _start_page(host, wss_relay.relay, wss_relay.spki)
        try:
            md5 = page.expect("md5", START_TIMEOUT)
            assert md5["wrong"] == [], "the page's MD5 fails RFC 1321's vectors"
            assert md5["utf8"] == hashlib.md5(MD5_PROBE.encode()).hexdigest()
            assert page.expect("open")["protocol"] == "msrp"  # RFC 7977 §4.1

            auth = page.expect("auth")
            assert auth["code"] == 200, page.story()
            use_path = auth["use_path"]
            assert use_path.startswith("msrps://") and use_path.endswith(";ws"), use_path

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
                        ("Message-ID", mid),
                        ("Byte-Range", f"1-{len(b)}/{len(b)}"),
                        ("Content-Type", ct),
                    ],
                    b,
                )
                for mid, ct, b in inbound
            ]
            for tid in tids:
                answer = conn.recv(STEP_TIMEOUT).frame
                assert (answer.tid, answer.code) == (tid, 200), answer.buf
            for (mid, ctype, body), tid in zip(inbound, tids, strict=True):
                got = page.expect("received")
                assert got["method"] == "SEND" and got["flag"] == "$"
                assert got["tid"] == tid.decode()
                assert got["to_path"] == self_uri
                assert got["from_path"] == f"{use_path} {bob.uri}"
                assert (got["message_id"], got["content_type"]) == (mid, ctype)
                assert got["byte_range"] == f"1-{len(body)}/{len(body)}"
                assert base64.b64decode(got["body"]) == body

            # Once each: nothing more reaches either side (the browser's 200s end at the relay,
            # which answered the peer hop by hop).
            time.sleep(QUIET)
            assert host.pending() == [], page.story()
            with pytest.raises(TimeoutError):
                conn.recv(QUIET)
        finally:
            page.browser.close()
