"""A private PostgreSQL server for tests: Debian's `postgresql` binaries, a temporary cluster.

The cluster lives in a temporary directory owned by the `postgres` user (PostgreSQL refuses
to run as root, and these tests run as root): initdb and the server run as that user through
setpriv, which execs (no fork), so the pid we hold is the postmaster's and stop() signals
only it. The server listens on 127.0.0.1 and a free port only, no Unix socket anywhere.
Passwords are checked (scram-sha-256) so the URLs under test carry one, as an operator's do.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from .integration.relay import free_port

SUPERUSER_PASSWORD = "pg-super-secret"
INSTALL = "apt-get install postgresql (scripts/test does)"
SKIPPED = "POSTGRESQL USER-STORE TESTS NOT RUN"


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and postgres."""
    found = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "initdb").exists() and (path / "postgres").exists():
            version = re.match(r"\d+", path.parent.name)
            found.append((int(version[0]) if version else 0, path))
    return max(found)[1] if found else None


def _setpriv() -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


class PgServer:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip(f"{SKIPPED}: no initdb in /usr/lib/postgresql/*/bin: {INSTALL}")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip(f"{SKIPPED}: no `postgres` user to run PostgreSQL as: {INSTALL}")
        if shutil.which("setpriv") is None:
            pytest.skip(f"{SKIPPED}: no setpriv (util-linux) to run PostgreSQL as its user")
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="msrpd-pg"))
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        pwfile = self.dir / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [*_setpriv(), *argv], capture_output=True, text=True, check=False, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def url(self, user: str = "postgres", password: str = SUPERUSER_PASSWORD, db: str = "") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db or 'postgres'}"

    def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 (the server's, closed with it)
        self.proc = subprocess.Popen(
            [
                *_setpriv(),
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"PostgreSQL did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: sessions are ended), by its pid."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def execute(self, *statements: str, db: str = "") -> None:
        """Each statement in autocommit (CREATE DATABASE cannot run in a transaction)."""
        with psycopg.connect(self.url(db=db), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.encode())

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "server.log").read_text()
        return ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
