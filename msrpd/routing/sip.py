"""The `sip` object a script's request_route(sip) gets for a SIP message on the MSRP port.

Rules (DESIGN §6, reference §1.1): Kamailio runs its request_route for SIP that arrives on the
MSRP port; msrpd calls the script's `request_route(sip)` when it has one, else answers 403 No
SIP Here statelessly. Replies are stateless (RFC 3261 §8.2.6) and a SIP response is never
answered.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol.sip import build_sip_reply

__all__ = ["SipRequest"]


class SipRequest:
    __slots__ = ("_to_tag", "_write", "raw")

    def __init__(self, raw: bytes, write: Callable[[bytes], object], to_tag: str) -> None:
        self.raw = raw
        """The whole SIP message as received."""
        self._write = write
        self._to_tag = to_tag

    @property
    def first_line(self) -> str:
        return self.raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")

    @property
    def method(self) -> str | None:
        """The request method, or None for a SIP response."""
        line = self.first_line
        return None if line.startswith("SIP/") else line.split(" ", 1)[0]

    def reply(self, code: int | str, reason: str) -> int:
        """sl_send_reply: a stateless response; -1 for a response or an unusable request."""
        data = build_sip_reply(self.raw, int(code), reason, self._to_tag)
        if data is None:
            return -1
        self._write(data)
        return 1
