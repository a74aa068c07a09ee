"""Fixtures of the interop tests: a live Kamailio and an msrpd, one each per test module.

When ../shared/oracle or the kamailio binary is missing, the live tests skip - the only skip
this suite allows - and the terminal summary says so in red, so a green run without Kamailio
is never mistaken for parity.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .oracle import Kamailio, missing
from .relays import MsrpdRelay

_SKIPPED: list[str] = []
_RESTARTS: list[str] = []


@pytest.fixture(scope="module")
def kamailio() -> Iterator[Kamailio]:
    """Kamailio 5.6.3 running kamailio-cmap.cfg on a free port, children 2."""
    reason = missing()
    if reason is not None:
        if reason not in _SKIPPED:
            _SKIPPED.append(reason)
        pytest.skip(f"LIVE KAMAILIO PARITY NOT TESTED: {reason}")
    kam = Kamailio()
    try:
        kam.start()
        yield kam
    finally:
        _RESTARTS.extend(kam.restarts)
        kam.close()


@pytest.fixture(scope="module")
def msrpd() -> Iterator[MsrpdRelay]:
    """msrpd with the cmap route, realm myrealm, alice and bob (xyz123), children 2."""
    relay = MsrpdRelay()
    result = relay.start()
    try:
        assert result.returncode == 0, result.stderr + relay.log()
        yield relay
    finally:
        relay.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RESTARTS:
        terminalreporter.write_sep("-", f"live Kamailio restarted {len(_RESTARTS)} times")
        for why in _RESTARTS:
            terminalreporter.write_line(f"  {why}")
    if not _SKIPPED:
        return
    terminalreporter.write_sep("!", "LIVE KAMAILIO PARITY TESTS WERE SKIPPED", red=True, bold=True)
    for reason in _SKIPPED:
        terminalreporter.write_line(f"  {reason}", red=True, bold=True)
    terminalreporter.write_line(
        "  msrpd was NOT compared with Kamailio; install it (apt-get install kamailio) "
        "or run scripts/test, which does.",
        red=True,
        bold=True,
    )
