"""Process-level errors: a bad configuration, and a supervisor that must stop.

Rules: protocol errors live in msrpd/protocol/errors.py; these two never reach a peer. A
ConfigError carries every problem found, not just the first, so one edit fixes a file. A
HaltSupervisor unwinds the supervisor to its exit with a status, like gunicorn's HaltServer.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "HaltSupervisor"]


class ConfigError(Exception):
    """The configuration cannot be used.

    Attributes:
        problems: one "key: what is wrong" text per problem, in the order found.
        source: the file the configuration came from, when there was one.
    """

    def __init__(self, *problems: str, source: Path | None = None) -> None:
        if not problems:
            raise TypeError("ConfigError needs at least one problem")
        super().__init__(*problems)
        self.problems: tuple[str, ...] = problems
        self.source = source

    def __str__(self) -> str:
        prefix = "" if self.source is None else f"{self.source}: "
        return "\n".join(prefix + problem for problem in self.problems)

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickles as cls(*args), which would drop the keyword-only source.
        return (type(self), self.problems, {"source": self.source})


class HaltSupervisor(Exception):
    """Stop the supervisor and exit the process with `exit_status`.

    Attributes:
        reason: what happened, for the log.
        exit_status: the process exit status (0 for a requested stop).
    """

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason, exit_status)
        self.reason = reason
        self.exit_status = exit_status

    def __str__(self) -> str:
        return f"{self.reason} (exit status {self.exit_status})"
