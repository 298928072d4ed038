"""CallToolResults of wrapped tools: JSON, text, images and other binary, and failures (docs/tool-backends.md
"Results"). Shared by the REST, CLI and Python-function backends."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from transports.protocol.catalog import ToolEntry
from transports.protocol.json_schema import describe, first_error

EXCERPT_CHARS = 2000  # how much of a failing body or stderr an error result quotes


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def error_result(message: str) -> dict[str, Any]:
    """A tool that ran and failed: the message is for the model and the person reading its log."""
    return {"content": [{"type": "text", "text": message}], "isError": True}


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


def json_result(value: Any, tool: ToolEntry) -> dict[str, Any]:
    """A JSON value: text for every client, ``structuredContent`` when it is an object; checked against
    the tool's output schema when it has one."""
    text = orjson.dumps(value).decode()
    if tool.output_validator is not None:
        if not isinstance(value, dict):
            return error_result(
                f"The tool returned {type(value).__name__} JSON, but its output schema describes an object."
            )
        failure = first_error(tool.output_validator, value)
        if failure is not None:
            return error_result(describe(failure, subject="The result does not match the tool's output schema"))
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if isinstance(value, dict):
        result["structuredContent"] = value
    return result


def binary_result(data: bytes, mime_type: str, *, uri: str) -> dict[str, Any]:
    """An image as an image item; any other binary as an embedded resource with a blob."""
    encoded = base64.b64encode(data).decode()
    if mime_type.startswith("image/"):
        return {"content": [{"type": "image", "data": encoded, "mimeType": mime_type}]}
    resource = {"uri": uri, "mimeType": mime_type or "application/octet-stream", "blob": encoded}
    return {"content": [{"type": "resource", "resource": resource}]}
