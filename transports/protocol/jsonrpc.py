"""JSON-RPC 2.0 envelopes for MCP: parsing, validation and encoding (the error codes are in vocabulary.py).

No Django here: the wire format is shared by every transport and the upstream clients.
"""

from __future__ import annotations

from typing import Any

import orjson

from transports.protocol.vocabulary import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_CLIENT_CAPABILITY,
    PARSE_ERROR,
    REQUEST_TIMEOUT,
    RESOURCE_NOT_FOUND,
    SERVER_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    URL_ELICITATION_REQUIRED,
)

__all__ = [
    # The error codes, declared in vocabulary.py and importable from here too.
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "MISSING_CLIENT_CAPABILITY",
    "PARSE_ERROR",
    "REQUEST_TIMEOUT",
    "RESOURCE_NOT_FOUND",
    "SERVER_ERROR",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "URL_ELICITATION_REQUIRED",
    "Id",
    "JsonRpcError",
    "dumps",
    "error_response",
    "kind",
    "loads",
    "notification",
    "request",
    "response",
    "validate",
]

Id = str | int


class JsonRpcError(Exception):
    """An error to answer with; ``http_status`` is what HTTP transports use when no session applies."""

    def __init__(self, code: int, message: str, data: Any = None, *, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def dumps(message: Any) -> bytes:
    return orjson.dumps(message)


# How deep a client's message may nest. orjson reads JSON nested up to 1024 levels but writes at most 254
# (deeper raises TypeError), and the gateway writes what it reads: relayed upstream, digested for MRTR,
# quoted in an error. So what it could not write is refused as it reads it, like what it could not read,
# with room left for the levels the gateway wraps around a client's values.
MAX_DEPTH = 200


def loads(body: bytes | str) -> Any:
    """Parse JSON; a JsonRpcError(-32700) on malformed input or nesting deeper than MAX_DEPTH."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonRpcError(PARSE_ERROR, f"Parse error: {exc}", http_status=400) from None
    # Only a body with that many brackets at all can nest that deep: most bodies skip the walk.
    opening = body.count(b"[") + body.count(b"{") if isinstance(body, bytes) else body.count("[") + body.count("{")
    if opening > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise JsonRpcError(PARSE_ERROR, f"Parse error: JSON nested more than {MAX_DEPTH} levels deep.", http_status=400)
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def response(id_: Id | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def error_response(id_: Id | None, error: JsonRpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": error.to_error()}


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def request(id_: Id, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message = notification(method, params)
    message["id"] = id_
    return message


def kind(message: dict[str, Any]) -> str:
    """'request', 'notification' or 'response' (result or error)."""
    if "method" in message:
        return "request" if "id" in message else "notification"
    return "response"


def validate(message: Any) -> dict[str, Any]:
    """Check the envelope of one message; JsonRpcError(-32600) naming what is wrong."""
    if not isinstance(message, dict):
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: a JSON-RPC message must be a JSON object.")
    if message.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0".')
    if "id" in message:
        id_ = message["id"]
        if isinstance(id_, bool) or not isinstance(id_, str | int):
            given = orjson.dumps(id_).decode()[:40]
            raise JsonRpcError(INVALID_REQUEST, f"Invalid Request: the id must be a string or an integer, not {given}.")
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "method" must be a non-empty string.')
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "params" must be an object.')
        return message
    if "id" not in message:
        raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: a message needs a "method" or an "id".')
    if ("result" in message) == ("error" in message):
        raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: a response has exactly one of "result" and "error".')
    return message
