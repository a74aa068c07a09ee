"""Loading a routing script: a Python file whose event callback is called for every frame.

Rules:
- The script is executed as a fresh module object (never inserted in sys.modules), so a reload
  gets new code and two scripts never share state through imports of each other.
- Exception: a file whose text is exactly one of the bundled routes' (routes/*.py, as shipped)
  runs that route's mypyc-compiled module on the compiled path (issue 16: the interpreter and
  the generic attribute lookups of every `msrp.xxx` cost thousands of instructions a frame).
  Those modules keep no state of their own, so sharing one import across reloads is the same
  as a fresh module per load. A copy whose text differs (line endings aside: the file is
  read as text), or MSRPD_PURE=1, runs interpreted as above.
- Any failure to load (syntax error, exception at import, missing or non-callable callback)
  becomes a RouteLoadError that names the file and line, so check-config, start and reload can
  say exactly what is wrong and keep the old script.
"""

from __future__ import annotations

import hashlib
import importlib
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hotpath import pure_requested

__all__ = [
    "BUNDLED_ROUTES",
    "DEFAULT_ROUTE",
    "RouteLoadError",
    "RouteScript",
    "compiled_route",
    "describe_route",
    "load_route",
]

DEFAULT_ROUTE = Path(__file__).with_name("routes") / "relay.py"
"""The RFC 4976 relay; the Kamailio examples (cmap.py, htable.py) are opt-in."""

BUNDLED_ROUTES = {
    "cmap": "174161c7ed6a63eb10a8b92659b321bd270420a22326082448309734c16866ed",
    "htable": "e13812445f2fffd097783132ee30a0e1de864b3e86af62be1562cbf7c485fb3b",
    "relay": "036cb15b77b0dae980ed2d6f8b35fc4674bf92c121433c50372ce91d0e5b77b7",
}
"""The SHA-256 of each bundled route's text as shipped, the text its compiled module was
built from: an operator who edits routes/NAME.py in place gets the edit run, interpreted.
A change to a route changes its digest here (tests/routing/test_script.py says which)."""

EventCallback = Callable[[Any], object]


class RouteLoadError(Exception):
    """A routing script that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class RouteScript:
    path: Path
    event: EventCallback
    """Called as `event(msrp)` for every MSRP frame."""
    sip: EventCallback | None
    """`request_route(sip)` for SIP requests on the MSRP port, when the script has one."""
    compiled: bool = False
    """The script is a bundled route running its compiled module (else it was exec'd)."""

    def describe(self) -> str:
        """The file and how it runs, for the start and reload log lines."""
        return _label(self.path, self.compiled)


def _label(path: Path, compiled: bool) -> str:
    return f"{path} ({'compiled' if compiled else 'interpreted'})"


def _where(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError):
        return f"{path}:{exc.lineno}: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    line = frames[-1].lineno if frames else "?"
    return f"{path}:{line}: {type(exc).__name__}: {exc}"


def compiled_route(source: str) -> types.ModuleType | None:
    """The compiled module of the bundled route whose text is `source`, when the compiled
    path runs and that module was built; else None."""
    if pure_requested():
        return None
    digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()
    for name, shipped in BUNDLED_ROUTES.items():
        if digest == shipped:
            module = importlib.import_module(f"{__package__}.routes.{name}")
            where = module.__file__ or ""
            return None if where.endswith(".py") else module
    return None


def describe_route(path: Path | None) -> str:
    """How load_route would run the script at `path`, without running it (the supervisor's
    start line: the workers load it)."""
    path = (path or DEFAULT_ROUTE).resolve()
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return f"{path} (unreadable)"
    return _label(path, compiled_route(source) is not None)


def _execute(path: Path, source: str) -> types.ModuleType:
    module = types.ModuleType(f"msrpd_route_{path.stem}")
    module.__file__ = str(path)
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as exc:
        raise RouteLoadError(_where(exc, path)) from None
    return module


def load_route(path: Path | None, callback: str) -> RouteScript:
    """Load the routing script at `path` (the bundled relay route when None).

    Raises:
        RouteLoadError: the file cannot be read or run, or has no callable `callback`.
    """
    path = (path or DEFAULT_ROUTE).resolve()
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RouteLoadError(f"{path}: cannot read: {exc.strerror}") from None
    module = compiled_route(source)
    compiled = module is not None
    if module is None:
        module = _execute(path, source)
    event = getattr(module, callback, None)
    if not callable(event):
        raise RouteLoadError(f"{path}: no callable {callback}() (event_callback)")
    sip = getattr(module, "request_route", None)
    return RouteScript(path, event, sip if callable(sip) else None, compiled)
