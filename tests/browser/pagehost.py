"""The test's web server on 127.0.0.1: serves the page and collects what the page reports.

The page (page.html, md5.js, page.js) reads its orders from /config.json and POSTs every step
to /event as JSON; `events` hands those to the test in the page's own order (`seq`), so the
test waits on a queue instead of polling the browser.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
STATIC = {
    "/page.html": "text/html; charset=utf-8",
    "/md5.js": "text/javascript; charset=utf-8",
    "/page.js": "text/javascript; charset=utf-8",
}
MAX_EVENT = 1 << 20


class PageHost:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.port = int(self.server.server_address[1])
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.next_seq = 1
        self.early: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> PageHost:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def event(self, timeout: float) -> dict[str, Any]:
        """The page's next event in its order; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while self.next_seq not in self.early:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event {self.next_seq} from the page in {timeout} s")
            try:
                got = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            self.early[int(got["seq"])] = got
        found = self.early.pop(self.next_seq)
        self.next_seq += 1
        return found

    def pending(self) -> list[dict[str, Any]]:
        """Everything the page reported and `event` has not returned yet."""
        while True:
            try:
                got = self.inbox.get_nowait()
            except queue.Empty:
                break
            self.early[int(got["seq"])] = got
        return [self.early[k] for k in sorted(self.early)]


def _handler(host: PageHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/config.json":
                self._reply(200, "application/json", json.dumps(host.config).encode())
            elif self.path in STATIC:
                self._reply(200, STATIC[self.path], (HERE / self.path[1:]).read_bytes())
            else:
                self._reply(404, "text/plain", b"not here\n")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if self.path != "/event" or not 0 < length <= MAX_EVENT:
                self._reply(400, "text/plain", b"POST /event with a JSON body\n")
                return
            host.inbox.put(json.loads(self.rfile.read(length)))
            self._reply(204, "text/plain", b"")

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a failing test prints the page's events, not the access log."""

    return Handler
