"""The session ids the relay issues in the URIs it grants (cmap_save, RFC 4976 §6.3)."""

from __future__ import annotations

import secrets

__all__ = ["new_session_id"]

# 96 bits from the CSPRNG: unguessable session ids (RFC 4976 §6.3, checklist case 15).
_SESSION_BYTES = 12


def new_session_id() -> str:
    """URL-safe base64 of random bytes (RFC 4975 §9), starting with a letter or digit: a "-"
    first would read as an option on a command line (msrpd ctl msrp.session_kill ID)."""
    while True:
        sessid = secrets.token_urlsafe(_SESSION_BYTES)
        if sessid[0].isalnum():
            return sessid
