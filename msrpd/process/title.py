"""Process titles, nginx style: `msrpd: supervisor`, `msrpd: worker 3 (draining)`.

Rules: one function, and a missing setproctitle (it is a C extension) only costs the titles
(gunicorn util._setproctitle).
"""

from __future__ import annotations

__all__ = ["set_title"]


def set_title(role: str) -> None:
    try:
        from setproctitle import setproctitle  # noqa: PLC0415 (optional C extension)
    except ImportError:  # pragma: no cover - the dependency is declared
        return
    setproctitle(f"msrpd: {role}")
