"""An HTTP response of a REST tool as MCP content (docs/tool-backends.md "Results"): JSON as
``structuredContent`` plus its text (after the optional JMESPath ``extract``), text, images and other
binary by content type; a non-2xx status as ``isError`` with a bounded excerpt of the body."""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache
from typing import Any

import jmespath
import jmespath.exceptions
import orjson

from transports.protocol.backends.outbound import OutboundResponse, masked
from transports.protocol.backends.results import binary_result, error_result, excerpt, json_result, text_result
from transports.protocol.catalog import ToolEntry

_TEXT_TYPES = frozenset(
    {
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/javascript",
        "application/ecmascript",
        "application/x-ndjson",
        "application/graphql",
        "application/sql",
    }
)
NO_BODY_STATUSES = frozenset({204, 205, 304})


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def is_text(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in _TEXT_TYPES or content_type.endswith("+xml")


@lru_cache(maxsize=256)
def compiled(expression: str) -> Any:
    return jmespath.compile(expression)


def decode(response: OutboundResponse) -> str:
    try:
        return response.body.decode(response.charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return response.body.decode("utf-8", errors="replace")


def status_line(response: OutboundResponse, secret_params: Collection[str]) -> str:
    """'HTTP 404 Not Found from GET https://...' (secret query values hidden)."""
    reason = f" {response.reason}" if response.reason else ""
    return f"HTTP {response.status}{reason} from {response.method} {masked(response.url, secret_params)}"


def failure_result(response: OutboundResponse, secret_params: Collection[str], attempts: int = 1) -> dict[str, Any]:
    """A non-2xx answer: the status and the start of what the API said."""
    message = status_line(response, secret_params)
    if attempts > 1:
        message += f" (after {attempts} attempts)"
    text = excerpt(decode(response))
    if text:
        if response.truncated and not text.endswith(")"):
            text += "…"
        message += f": {text}"
    return error_result(message)


def response_result(
    response: OutboundResponse, *, tool: ToolEntry, extract: str | None, secret_params: Collection[str]
) -> dict[str, Any]:
    """The CallToolResult of a 2xx answer."""
    if response.method == "HEAD" or response.status in NO_BODY_STATUSES or not response.body:
        return text_result(status_line(response, secret_params))
    content_type = response.content_type
    if is_json(content_type):
        try:
            value = orjson.loads(response.body if response.charset.lower() in ("utf-8", "utf8") else decode(response))
        except orjson.JSONDecodeError:
            return error_result(
                f"{status_line(response, secret_params)} is not valid JSON although its content type is "
                f"{content_type}: {excerpt(decode(response), 500)}"
            )
        if extract:
            try:
                value = compiled(extract).search(value)
            except jmespath.exceptions.JMESPathError as exc:
                return error_result(f"The tool's extract expression {extract!r} failed on the response: {exc}")
        return json_result(_wrapped(value, tool), tool)
    if content_type.startswith("image/"):
        return binary_result(response.body, content_type, uri=masked(response.url, secret_params))
    if is_text(content_type):
        return text_result(decode(response))
    if not content_type:  # unlabelled: text when it reads as UTF-8
        try:
            return text_result(response.body.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    return binary_result(
        response.body, content_type or "application/octet-stream", uri=masked(response.url, secret_params)
    )


def _wrapped(value: Any, tool: ToolEntry) -> Any:
    """A non-object JSON value as {"result": value} when the tool's output schema says so (MCP's
    structuredContent is an object)."""
    if isinstance(value, dict) or tool.output_validator is None:
        return value
    schema = tool.wire.get("outputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict) and "result" in properties:
        return {"result": value}
    return value
