"""The accounting line: one `msrpd.acct` record per session when it ends.

Rules (issue 6): a session ends when the connection that authenticated it closes (RFC 4976
§6.3: its URI dies with it). The record names the session, the user who authenticated, the
peer, bytes and frames each way on that connection, how long the session lived and why the
connection closed. Text logs get a key=value line; JSON logs get the same keys as fields.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

__all__ = ["Accounted", "account"]

logger = logging.getLogger("msrpd.acct")


class Accounted(Protocol):
    """What the record reads of a connection (conn.MsrpConnection)."""

    sessions: list[str]
    session_meta: dict[str, tuple[str, float]]
    peer_key: str
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    close_reason: str


def account(conn: Accounted) -> None:
    now = time.time()
    for sessid in conn.sessions:
        user, started = conn.session_meta.get(sessid, ("", now))
        fields = {
            "session": sessid,
            "user": user,
            "peer": conn.peer_key,
            "bytes_in": conn.bytes_in,
            "bytes_out": conn.bytes_out,
            "frames_in": conn.frames_in,
            "frames_out": conn.frames_out,
            "duration": round(now - started, 3),
            "reason": conn.close_reason,
        }
        text = " ".join(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items()
        )
        logger.info("session ended %s", text, extra={"fields": fields})
