"""The browser test's skip report: when Chromium is missing or cannot start, the test skips
and the terminal summary says so in red, as tests/interop does for Kamailio, so a green run
without a browser is never mistaken for one that drove msrpd from a real browser."""

from __future__ import annotations

import pytest

SKIPPED: list[str] = []


def skip(reason: str) -> None:
    """Skip the running test loudly: the reason also goes to the terminal summary."""
    if reason not in SKIPPED:
        SKIPPED.append(reason)
    pytest.skip(f"BROWSER TEST NOT RUN: {reason}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SKIPPED:
        return
    terminalreporter.write_sep("!", "THE BROWSER TEST WAS SKIPPED", red=True, bold=True)
    for reason in SKIPPED:
        terminalreporter.write_line(f"  {reason}", red=True, bold=True)
    terminalreporter.write_line(
        "  msrpd's WebSocket transport was NOT tested from a real browser; install Chromium "
        "(apt-get install chromium) or run scripts/test, which does.",
        red=True,
        bold=True,
    )
