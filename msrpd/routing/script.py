"""Loading a routing script: a Python file whose event callback is called for every frame.

Rules:
- The script is executed as a fresh module object (never inserted in sys.modules), so a reload
  gets new code and two scripts never share state through imports of each other.
- Any failure to load (syntax error, exception at import, missing or non-callable callback)
  becomes a RouteLoadError that names the file and line, so check-config, start and reload can
  say exactly what is wrong and keep the old script.
"""

from __future__ import annotations

import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ROUTE", "RouteLoadError", "RouteScript", "load_route"]

DEFAULT_ROUTE = Path(__file__).with_name("routes") / "relay.py"
"""The RFC 4976 relay; the Kamailio examples (cmap.py, htable.py) are opt-in."""

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


def _where(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError):
        return f"{path}:{exc.lineno}: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    line = frames[-1].lineno if frames else "?"
    return f"{path}:{line}: {type(exc).__name__}: {exc}"


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
    module = types.ModuleType(f"msrpd_route_{path.stem}")
    module.__file__ = str(path)
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except Exception as exc:
        raise RouteLoadError(_where(exc, path)) from None
    event = getattr(module, callback, None)
    if not callable(event):
        raise RouteLoadError(f"{path}: no callable {callback}() (event_callback)")
    sip = getattr(module, "request_route", None)
    return RouteScript(path, event, sip if callable(sip) else None)
