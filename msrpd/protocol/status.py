"""MSRP status codes a relay sends or meets (RFC 4975 §10, RFC 4976 §7).

Rules: names follow the relay vocabulary of the field (AG Projects' msrprelay), values are the
wire codes; the default reason phrase of each is the RFC's wording.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    OK = 200
    UNINTELLIGIBLE = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    DOWNSTREAM_TIMEOUT = 408
    STOP_SENDING = 413
    UNSUPPORTED_MEDIA_TYPE = 415
    INTERVAL_OUT_OF_BOUNDS = 423
    NO_SESSION = 481
    SERVER_ERROR = 500
    """Not in RFC 4975 §10; Kamailio's scripts answer it when the relay itself fails."""
    UNKNOWN_METHOD = 501
    SESSION_TAKEN = 506

    @property
    def reason(self) -> str:
        return _REASONS[self]


_REASONS = {
    Status.OK: "OK",
    Status.UNINTELLIGIBLE: "Bad Request",
    Status.UNAUTHORIZED: "Unauthorized",
    Status.FORBIDDEN: "Forbidden",
    Status.DOWNSTREAM_TIMEOUT: "Request Timeout",
    Status.STOP_SENDING: "Stop Sending",
    Status.UNSUPPORTED_MEDIA_TYPE: "Unsupported Media Type",
    Status.INTERVAL_OUT_OF_BOUNDS: "Interval Out-of-Bounds",
    Status.NO_SESSION: "Session Does Not Exist",
    Status.SERVER_ERROR: "Server Error",
    Status.UNKNOWN_METHOD: "Method Not Implemented",
    Status.SESSION_TAKEN: "Session Already Bound",
}
