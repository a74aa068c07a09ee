"""A private redis-server for the cluster tests (issue 17): Debian's, on 127.0.0.1 and a free
port, no persistence, its files in a temporary directory; stopped by the pid it started
(never by name). Without redis-server the tests that need it skip, and say so loudly.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .relay import free_port

__all__ = ["REDIS_SERVER", "SKIP", "RedisServer", "private_redis"]

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
SKIP = "CLUSTER NOT TESTED: redis-server is not installed (apt-get install redis-server)"
"""Why a test that needs redis-server skipped: tests/integration/conftest.py lists every test
skipped so at the end of the run, in red."""


def private_redis() -> Iterator[RedisServer]:
    """What a fixture yields from: a started private redis-server, stopped at the end; the
    test skips (SKIP) without redis-server."""
    if REDIS_SERVER is None:
        pytest.skip(SKIP)
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


class RedisServer:
    def __init__(self) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="msrpd-redis"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None and self.proc is None
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"redis-server did not start: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it by its pid (SIGTERM; SIGKILL after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        """A synchronous client (redis-py), text replies."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text()
        return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
