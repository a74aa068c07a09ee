"""Which copy of the hot path runs: the mypyc-compiled modules or their .py sources (issue 16).

`pip install` compiles the modules pyproject.toml lists under [tool.msrpd] (setup.py); their
.so files sit beside the sources and Python's import system prefers them. MSRPD_PURE=1 puts a
finder first on sys.meta_path that loads every msrpd module from its .py source instead, as
AIOHTTP_NO_EXTENSIONS=1 does for aiohttp. Forked workers inherit the finder, and every process
the CLI starts inherits the environment, so the choice holds in all of them. This module and
msrpd/__init__.py are never compiled.

scripts/build-pgo rebuilds the compiled modules with GCC's profile-guided optimisation and
then stamps the library it built (`mark_profile_guided`): the size and modification time of
msrpd__mypyc's file, beside it as `<file>.pgo`. A later plain build (`pip install`) replaces
the file, so the stamp no longer matches and `hot_build` says "compiled" again.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = [
    "PURE_ENV",
    "SourceFinder",
    "build_of",
    "environment",
    "group_library",
    "hot_build",
    "hot_path",
    "install",
    "mark_profile_guided",
    "pure_requested",
    "stamp_matches",
    "write_stamp",
]

PURE_ENV: Final = "MSRPD_PURE"
_GROUP: Final = "msrpd__mypyc"
"""The one library that holds the compiled modules' code (setup.py's mypyc group)."""


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


@functools.cache
def hot_build() -> str:
    """How the running hot path was built, for people: "pure", "compiled" (setup.py's build)
    or "compiled, profile-guided" (scripts/build-pgo's, its stamp matching the library).
    Read once, when first asked (the supervisor asks as it starts): a rebuild while the
    relay runs changes the files, not what the relay loaded."""
    path = hot_path()
    return path if path == "pure" else build_of(group_library())


def build_of(library: Path) -> str:
    """hot_build for a compiled path whose group library is `library`."""
    return "compiled, profile-guided" if stamp_matches(library) else "compiled"


def mark_profile_guided() -> Path:
    """Stamp the compiled library as profile-guided (scripts/build-pgo, after its build);
    returns the stamp's path."""
    if hot_path() != "compiled":
        raise RuntimeError("the hot path is not compiled: nothing to stamp")
    return write_stamp(group_library())


def group_library() -> Path:
    """The compiled library's file, found without loading it (a process on the pure path
    may ask: the tests)."""
    spec = importlib.util.find_spec(_GROUP)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{_GROUP} is not installed: the hot path was never compiled")
    return Path(spec.origin)


def _stamp_path(library: Path) -> Path:
    return library.with_name(library.name + ".pgo")


def _identity(library: Path) -> str:
    info = library.stat()
    return f"{info.st_size} {info.st_mtime_ns}\n"


def write_stamp(library: Path) -> Path:
    """Record `library` as it is now (size, modification time) beside it."""
    stamp = _stamp_path(library)
    stamp.write_text(_identity(library))
    return stamp


def stamp_matches(library: Path) -> bool:
    """`library` is the very file write_stamp recorded (not rebuilt since)."""
    try:
        return _stamp_path(library).read_text() == _identity(library)
    except OSError:
        return False
