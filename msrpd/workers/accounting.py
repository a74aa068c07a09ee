"""The accounting line: one `msrpd.acct` record per session when it ends.

Rules (issue 6): a session ends when the connection that authenticated it closes (RFC 4976
§6.3: its URI dies with it). The record names the session, the user who authenticated, the
peer, bytes and frames each way on that connection, how long the session lived and why the
connection closed. Text logs get a key=value line; JSON logs get the same keys as fields.
"""

from __future__ import annotations

import logging
import time

from .connstats import ConnStats

__all__ = ["account"]

logger = logging.getLogger("msrpd.acct")


def account(stats: ConnStats, peer: str) -> None:
    """The lines for the sessions of the connection to `peer` whose record is `stats`."""
    now = time.time()
    for sessid in stats.sessions:
        user, started = stats.session_meta.get(sessid, ("", now))
        fields = {
            "session": sessid,
            "user": user,
            "peer": peer,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "duration": round(now - started, 3),
            "reason": stats.close_reason,
        }
        text = " ".join(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items()
        )
        logger.info("session ended %s", text, extra={"fields": fields})
