"""HTTP request headers of 2026-07-28 Streamable HTTP ("Request Metadata"), and which caller headers may
ride along on a POST.

`Mcp-Name` and `Mcp-Param-{Name}` values that are not plain visible ASCII are sent as
`=?base64?...?=` ("Value Encoding"). `Mcp-Param-{Name}` headers mirror the tool arguments whose schema
property carries `x-mcp-header` ("Custom Headers from Tool Parameters"); a tool whose annotations break
the rules is unusable over HTTP and is left out of `tools/list`.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Mapping
from typing import Any

from transports.protocol.vocabulary import NAME_FIELDS

SENTINEL_PREFIX = "=?base64?"
SENTINEL_SUFFIX = "?="
_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})
_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_SCHEMA_DEPTH = 64

# Headers a caller of `request(..., headers=...)` can never set: framing, credentials, and the protocol
# headers the client computes itself.
PROTECTED = frozenset(
    {
        "accept",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "mcp-protocol-version",
        "mcp-session-id",
        "proxy-authorization",
        "te",
        "transfer-encoding",
        "upgrade",
    }
)

ParamHeaders = tuple[tuple[tuple[str, ...], str], ...]  # ((property path, header name), ...)


def is_token(name: str) -> bool:
    """RFC 9110 field-name syntax (`1*tchar`)."""
    return bool(name) and all(ch in _TCHAR for ch in name)


def encode_value(value: str) -> str:
    """The header form of a value: as is when it is plain visible ASCII (spaces and tabs inside allowed,
    none at the ends, not looking like the sentinel), else the Base64 sentinel."""
    plain = (
        value == value.strip(" \t")
        and all(ch == "\t" or 0x20 <= ord(ch) <= 0x7E for ch in value)
        and not (value.startswith(SENTINEL_PREFIX) and value.endswith(SENTINEL_SUFFIX))
    )
    if plain:
        return value
    return SENTINEL_PREFIX + base64.b64encode(value.encode()).decode("ascii") + SENTINEL_SUFFIX


def name_header(method: str, params: Mapping[str, Any] | None) -> str | None:
    """`Mcp-Name` for the methods that need it: params.name (tools/call, prompts/get) or params.uri
    (resources/read)."""
    if not params:
        return None
    source = NAME_FIELDS.get(method)
    value = params.get(source) if source else None
    return encode_value(value) if isinstance(value, str) else None


def _header_type(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind in _HEADER_TYPES
    if isinstance(kind, list) and kind:
        named = [k for k in kind if k != "null"]
        return bool(named) and all(isinstance(k, str) and k in _HEADER_TYPES for k in named)
    return False


def param_headers(schema: Any) -> ParamHeaders | None:
    """The `x-mcp-header` annotations of a tool's inputSchema, or None when one of them is invalid.

    Valid: a non-empty token, unique without regard to case, on a property of primitive type (string,
    integer, boolean) reached from the root through `properties` keys only.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    valid = True

    def walk(node: Any, path: tuple[str, ...] | None, depth: int) -> None:
        nonlocal valid
        if depth > _MAX_SCHEMA_DEPTH:
            return
        if isinstance(node, list):
            for item in node:
                walk(item, None, depth + 1)
            return
        if not isinstance(node, Mapping):
            return
        if "x-mcp-header" in node:
            name = node["x-mcp-header"]
            if not path or not isinstance(name, str) or not is_token(name) or not _header_type(node):
                valid = False
            else:
                found.append((path, name))
        for key, value in node.items():
            if key == "x-mcp-header":
                continue
            if key == "properties" and isinstance(value, Mapping):
                for prop, sub in value.items():
                    walk(sub, (*path, str(prop)) if path is not None else None, depth + 1)
            else:
                walk(value, None, depth + 1)

    walk(schema, (), 0)
    names = [name.lower() for _, name in found]
    if not valid or len(names) != len(set(names)):
        return None
    return tuple(found)


def param_values(annotations: ParamHeaders, arguments: Any) -> dict[str, str]:
    """`Mcp-Param-{Name}` headers for the arguments of a call (absent or null values give none)."""
    headers: dict[str, str] = {}
    for path, name in annotations:
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            if abs(value) > _MAX_SAFE_INTEGER:
                continue
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            continue
        headers[f"Mcp-Param-{name}"] = encode_value(text)
    return headers


def add_extra(headers: dict[str, str], extra: Mapping[str, str] | None, reserved: Mapping[str, str]) -> None:
    """Add a caller's headers to a request, except protected ones, those the configuration sets
    (credentials) and values that could break the header block."""
    if not extra:
        return
    taken = {name.lower() for name in reserved}
    for name, value in extra.items():
        if not isinstance(name, str) or not isinstance(value, str) or not is_token(name):
            continue
        lowered = name.lower()
        if lowered in PROTECTED or lowered in taken or any(ch in value for ch in "\r\n\0"):
            continue
        for existing in [key for key in headers if key.lower() == lowered]:
            del headers[existing]
        headers[name] = value
