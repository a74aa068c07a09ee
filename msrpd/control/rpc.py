"""JSON-RPC 2.0 for the control fifo: error codes, RpcError, the method table's dispatch, and
what makes a request valid and an answer encodable (jsonrpc.org/specification).

Rules: error codes are JSON-RPC 2.0 §5.1's, or -32000..-32099 for ours; an id is a string, a
number or null (§4); an answer that cannot be written as JSON becomes a -32603 answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Dispatch",
    "Method",
    "RpcError",
    "dispatcher",
    "encode_answer",
    "invalid_request",
    "valid_id",
]

logger = logging.getLogger(__name__)

# JSON-RPC 2.0 §5.1 error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603

Method = Callable[[Any], Any]
"""A control method: takes the request's params (list, dict or None), returns the result."""
Dispatch = Callable[[str, Any], Any]
"""dispatch(method, params) -> result; raises RpcError for a JSON-RPC error answer."""


class RpcError(Exception):
    """A JSON-RPC error answer: code (JSON-RPC 2.0 §5.1, or -32000..-32099), message, data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def dispatcher(methods: Mapping[str, Method]) -> Dispatch:
    """A Dispatch over a method table; an unknown name raises RpcError(-32601)."""

    def dispatch(method: str, params: Any) -> Any:
        fn = methods.get(method)
        if fn is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        return fn(params)

    return dispatch


def valid_id(rid: Any) -> bool:
    return rid is None or isinstance(rid, str | float) or type(rid) is int


def invalid_request(request: dict[str, Any]) -> str | None:
    """Why `request` is not a JSON-RPC 2.0 request (§4), or None."""
    if request.get("jsonrpc") != "2.0":
        return 'Invalid Request: "jsonrpc" must be "2.0"'
    method = request.get("method")
    if not isinstance(method, str) or not method:
        return 'Invalid Request: "method" must be a non-empty string'
    if "params" in request and not isinstance(request["params"], list | dict):
        return 'Invalid Request: "params" must be an array or an object'
    if not valid_id(request.get("id")):
        return 'Invalid Request: "id" must be a string, a number or null'
    return None


def encode_answer(rid: Any, outcome: dict[str, Any]) -> bytes:
    try:
        body = {"jsonrpc": "2.0", **outcome, "id": rid}
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        logger.error("control: the result cannot be written as JSON: %s", exc)
        error = {"code": INTERNAL_ERROR, "message": "Internal error", "data": str(exc)}
        text = json.dumps({"jsonrpc": "2.0", "error": error, "id": rid})
    return text.encode() + b"\n"
