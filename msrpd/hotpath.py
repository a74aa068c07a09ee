"""Which copy of the hot path runs: the mypyc-compiled modules or their .py sources (issue 16).

`pip install` compiles the modules pyproject.toml lists under [tool.msrpd] (setup.py); their
.so files sit beside the sources and Python's import system prefers them. MSRPD_PURE=1 puts a
finder first on sys.meta_path that loads every msrpd module from its .py source instead, as
AIOHTTP_NO_EXTENSIONS=1 does for aiohttp. Forked workers inherit the finder, and every process
the CLI starts inherits the environment, so the choice holds in all of them. This module and
msrpd/__init__.py are never compiled.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType
from typing import Final

__all__ = ["PURE_ENV", "SourceFinder", "environment", "hot_path", "install", "pure_requested"]

PURE_ENV: Final = "MSRPD_PURE"


class SourceFinder(MetaPathFinder):
    """Finds msrpd's modules in their .py files only, never in a compiled extension."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is None or not fullname.startswith("msrpd."):
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def pure_requested() -> bool:
    """MSRPD_PURE is set in this process's environment, to anything but "" or "0"."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def environment(pure: bool) -> dict[str, str]:
    """This process's environment for a child process that is to run the pure path (`pure`)
    or the compiled one: MSRPD_PURE=1 exactly when `pure`."""
    env = {name: value for name, value in os.environ.items() if name != PURE_ENV}
    if pure:
        env[PURE_ENV] = "1"
    return env


def install() -> None:
    """Put the source finder first when MSRPD_PURE is set (pure_requested)."""
    if pure_requested() and not any(isinstance(finder, SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFinder())


def hot_path() -> str:
    """Which path runs: "compiled" (the mypyc extensions) or "pure" (the .py sources)."""
    reader = importlib.import_module(f"{__package__}.protocol.reader")
    return "pure" if reader.__file__ is None or reader.__file__.endswith(".py") else "compiled"
