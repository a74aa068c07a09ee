"""Headless Chromium for the browser test: find it, start it on one URL, stop exactly it.

Debian's `chromium` (scripts/test installs it as it installs Kamailio). The flags are what a
container needs: `--headless=new` (no display), `--no-sandbox` (the sandbox refuses to run as
root and needs user namespaces a container seldom grants), `--disable-gpu`,
`--disable-dev-shm-usage` (a container's /dev/shm is often 64 MB; Debian's launcher means to
add the flag itself but its test of /dev/shm can fail), and a throwaway `--user-data-dir`.
No DevTools connection: the page reports to the test's own web server. Chromium runs in its
own process group, and only that group is signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

NAME = "chromium"


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which(NAME) is None:
        return f"no `{NAME}` on PATH (Debian's package: apt-get install {NAME})"
    return None


class Chromium:
    def __init__(self, url: str, trusted_spki: str | None = None) -> None:
        """`trusted_spki`: the base64 SHA-256 of one certificate's public key, accepted though
        no CA vouches for it (the relay's test certificate); nothing else is waived."""
        self.profile = Path(tempfile.mkdtemp(prefix="msrpd-chromium-"))
        self.log_path = self.profile / "chromium.log"
        args = [
            NAME,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={self.profile / 'profile'}",
        ]
        if trusted_spki is not None:
            args.append(f"--ignore-certificate-errors-spki-list={trusted_spki}")
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [*args, url],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise

    def exited(self) -> int | None:
        return self.proc.poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Its helpers (zygote, renderer) are in the same group and may outlive the browser.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)
