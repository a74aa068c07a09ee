"""A worker's modes and the signals that change them (worker.py's module docstring says what
each mode does)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from enum import Enum

from ..process.logs import reopen_logs

__all__ = ["Mode", "install_signals"]


class Mode(Enum):
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    EXITING = "exiting"


def install_signals(
    loop: asyncio.AbstractEventLoop, term: Callable[[], None], set_mode: Callable[[Mode], None]
) -> None:
    """SIGTERM calls `term`; SIGUSR2, SIGINT and SIGQUIT call `set_mode` (DRAINING, EXITING);
    SIGUSR1 reopens the logs; SIGHUP is the supervisor's, ignored here."""
    # SIGTERM gets a plain handler, not the loop's: it runs at the next bytecode, inside a
    # long loop iteration too (uvloop runs pending handlers when its wakeup fd fires), so a
    # busy worker stops reading at once, and its drain_timeout counts from the supervisor's
    # signal, as the supervisor's kill does (issue 12 item 5).
    signal.signal(signal.SIGTERM, lambda signum, frame: term())
    loop.add_signal_handler(signal.SIGUSR2, set_mode, Mode.DRAINING)
    loop.add_signal_handler(signal.SIGINT, set_mode, Mode.EXITING)
    loop.add_signal_handler(signal.SIGQUIT, set_mode, Mode.EXITING)
    loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
