"""JSON-RPC messages as a test client sends them to a gateway over the wire."""

from __future__ import annotations

from typing import Any


def message(method: str, params: dict[str, Any] | None = None, request_id: Any = None) -> dict[str, Any]:
    """A request (with ``request_id``) or a notification (without); ``params`` only when given."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        body["id"] = request_id
    if params is not None:
        body["params"] = params
    return body
