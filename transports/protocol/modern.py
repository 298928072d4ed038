"""The stateless 2026-07-28 ("modern") era at the edge: the per-request `_meta` envelope, the HTTP
headers that mirror the body, and the sealed `requestState` of multi-round-trip requests.

Every modern request carries what a session used to hold: its protocol version, the client's
capabilities and info and, optionally, a log level (basic/index, `_meta`). Streamable HTTP mirrors
the method, the target's name and annotated tool arguments into headers that intermediaries route
on, so the server must check that they match the body (basic/transports/streamable-http, "Request
Metadata"). No Django here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from transports.protocol import jsonrpc, versions
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.vocabulary import (
    ENVELOPE_KEYS,
    LOG_LEVELS,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    NAME_FIELDS,
)

# Declared in vocabulary.py; the server side reads them here too (modern.META_*).
from transports.protocol.vocabulary import META_SERVER_INFO as META_SERVER_INFO
from transports.protocol.vocabulary import META_SUBSCRIPTION_ID as META_SUBSCRIPTION_ID

META_KEYS = ENVELOPE_KEYS  # the per-request envelope (the server side's name for it)

# Methods whose target is mirrored in Mcp-Name, and where it sits in params.
NAME_BEARING = NAME_FIELDS
# Methods that may answer with an InputRequiredResult (basic/patterns/mrtr, "Supported Requests").
MRTR_METHODS = frozenset(NAME_BEARING)
MRTR_FIELDS = ("inputResponses", "requestState")
PARAM_HEADER_PREFIX = "mcp-param-"
MAX_REQUEST_STATE = 2048  # characters; ours are far shorter

# HTTP status for a JSON-RPC error code on the modern wire (streamable-http, "Server Validation").
HTTP_STATUS = {
    jsonrpc.PARSE_ERROR: 400,
    jsonrpc.INVALID_REQUEST: 400,
    jsonrpc.INVALID_PARAMS: 400,
    jsonrpc.HEADER_MISMATCH: 400,
    jsonrpc.MISSING_CLIENT_CAPABILITY: 400,
    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION: 400,
    jsonrpc.METHOD_NOT_FOUND: 404,
}


def is_modern(message: Any) -> bool:
    """Whether a decoded body is a request in the modern envelope (a `_meta` protocol version)."""
    if not isinstance(message, dict):
        return False
    params = message.get("params")
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    return isinstance(meta, dict) and META_PROTOCOL_VERSION in meta


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a modern request says about its client (basic/index, `_meta`)."""

    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any]
    log_level: str | None


def parse_envelope(message: dict[str, Any]) -> Envelope:
    """The request's `_meta` envelope; -32602 when a required field is missing or malformed (the
    version is checked by ``check_version``, after the headers)."""
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        raise JsonRpcError(
            jsonrpc.INVALID_PARAMS,
            f"Invalid params: a {versions.MODERN_VERSIONS[0]} request needs params._meta with "
            f"{META_PROTOCOL_VERSION} and {META_CLIENT_CAPABILITIES}.",
        )
    version = meta.get(META_PROTOCOL_VERSION)
    if not isinstance(version, str) or not version:
        raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: _meta needs {META_PROTOCOL_VERSION}.")
    capabilities = meta.get(META_CLIENT_CAPABILITIES)
    if not isinstance(capabilities, dict):
        raise JsonRpcError(
            jsonrpc.INVALID_PARAMS, f"Invalid params: _meta needs {META_CLIENT_CAPABILITIES} (an object)."
        )
    client_info = meta.get(META_CLIENT_INFO, {})
    if not isinstance(client_info, dict):
        raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: _meta {META_CLIENT_INFO} must be an object.")
    level = meta.get(META_LOG_LEVEL)
    if level is not None and level not in LOG_LEVELS:
        raise JsonRpcError(
            jsonrpc.INVALID_PARAMS, f"Invalid params: _meta {META_LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}."
        )
    return Envelope(version, capabilities, client_info, level)


def check_version(envelope: Envelope) -> None:
    """-32022 listing what we serve when the request's version is not one of them (basic/versioning)."""
    if envelope.protocol_version not in versions.MODERN_VERSIONS:
        raise unsupported_version(envelope.protocol_version)


def unsupported_version(requested: str) -> JsonRpcError:
    return JsonRpcError(
        jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(versions.MODERN_VERSIONS), "requested": requested},
    )


def decode_header_value(value: str) -> str:
    """A header value with the `=?base64?...?=` sentinel decoded (streamable-http, "Value Encoding")."""
    if value.startswith("=?base64?") and value.endswith("?=") and len(value) >= 11:
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _mismatch("a Base64-encoded header value does not decode") from None
    if any(not (0x20 <= ord(ch) <= 0x7E or ch == "\t") for ch in value):
        raise _mismatch("a header value contains characters outside visible ASCII")
    return value


def _mismatch(detail: str) -> JsonRpcError:
    return JsonRpcError(jsonrpc.HEADER_MISMATCH, f"Header mismatch: {detail}.")


def check_headers(message: dict[str, Any], headers: Mapping[str, str], version: str) -> None:
    """MCP-Protocol-Version, Mcp-Method and Mcp-Name must be present and equal to the body
    (streamable-http, "Server Validation"); -32020 otherwise."""
    header_version = headers.get("mcp-protocol-version")
    if header_version is None:
        raise _mismatch("the MCP-Protocol-Version header is required")
    if header_version != version:
        raise _mismatch(f"MCP-Protocol-Version header value {header_version!r} does not match body value {version!r}")
    method = message["method"]
    header_method = headers.get("mcp-method")
    if header_method is None:
        raise _mismatch("the Mcp-Method header is required")
    if header_method != method:
        raise _mismatch(f"Mcp-Method header value {header_method!r} does not match body value {method!r}")
    field = NAME_BEARING.get(method)
    if field is None:
        return
    target = (message.get("params") or {}).get(field)
    header_name = headers.get("mcp-name")
    if header_name is None:
        raise _mismatch(f"the Mcp-Name header is required for {method}")
    if decode_header_value(header_name) != target:
        raise _mismatch(f"Mcp-Name header value {header_name!r} does not match body value {target!r}")


def header_paths(schema: Mapping[str, Any]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(lower-case header suffix, property path) for each `x-mcp-header` annotation statically
    reachable through `properties` (server/tools, `x-mcp-header`)."""

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...]]]:
        properties = node.get("properties")
        if not isinstance(properties, dict):
            return
        for key, child in properties.items():
            if not isinstance(child, dict):
                continue
            name = child.get("x-mcp-header")
            if isinstance(name, str) and name:
                yield name.lower(), (*path, key)
            yield from walk(child, (*path, key))

    yield from walk(schema, ())


def _header_form(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_param_headers(schema: Mapping[str, Any], arguments: Mapping[str, Any], headers: Mapping[str, str]) -> None:
    """Mcp-Param-* headers against the arguments the tool annotates (streamable-http, "Custom Headers
    from Tool Parameters"): a value present needs its header, equal after decoding; -32020 otherwise."""
    for suffix, path in header_paths(schema):
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        expected = _header_form(value)
        header = headers.get(PARAM_HEADER_PREFIX + suffix)
        if expected is None:
            continue
        if header is None:
            raise _mismatch(f"the Mcp-Param-{suffix} header is required when {'.'.join(path)} is given")
        actual = decode_header_value(header)
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                equal = float(actual) == float(value)
            except ValueError:
                equal = False
        else:
            equal = actual == expected
        if not equal:
            raise _mismatch(f"Mcp-Param-{suffix} header value {header!r} does not match body value {expected!r}")


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The Mcp-Param-* headers of a request, to pass on to the upstream unchanged."""
    return {name: value for name, value in headers.items() if name.startswith(PARAM_HEADER_PREFIX)}


def request_digest(method: str, params: Mapping[str, Any]) -> str:
    """A digest of what identifies a request across its retries: the method, its target and arguments."""
    salient = {k: v for k, v in params.items() if k not in MRTR_FIELDS and k != "_meta"}
    body = orjson.dumps([method, salient], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RequestState:
    """What a sealed requestState says: which parked call, which round, for whom and for what."""

    call_id: str
    round: int
    principal: str
    server: str | None
    digest: str
    expires: float


class RequestStateSealer:
    """Seals requestState with HMAC-SHA256 so a client can carry it but not forge it
    (basic/patterns/mrtr, "Security Considerations")."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"mcp-gateway/request-state/v1", hashlib.sha256).digest()

    def seal(self, state: RequestState) -> str:
        payload = orjson.dumps(
            [state.call_id, state.round, state.principal, state.server, state.digest, round(state.expires, 3)]
        )
        body = base64.urlsafe_b64encode(payload).rstrip(b"=")
        tag = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:24]).rstrip(b"=")
        return (body + b"." + tag).decode()

    def open(self, token: Any, *, principal: str, server: str | None, digest: str) -> RequestState:
        """The state inside ``token``, checked; JsonRpcError(-32602) naming what is wrong."""
        if not isinstance(token, str) or len(token) > MAX_REQUEST_STATE or token.count(".") != 1:
            raise _bad_state("it is not a requestState this gateway issued")
        body, tag = token.encode().split(b".")
        expected = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:24]).rstrip(b"=")
        if not hmac.compare_digest(tag, expected):
            raise _bad_state("its signature does not verify (it was altered or not issued here)")
        try:
            call_id, round_, owner, owner_server, owner_digest, expires = orjson.loads(
                base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
            )
        except (ValueError, binascii.Error):
            raise _bad_state("it is malformed") from None
        if expires < time.time():
            raise _bad_state("it has expired; send the request again without inputResponses and requestState")
        if owner != principal or owner_server != server:
            raise _bad_state("it was issued to another caller")
        if owner_digest != digest:
            raise _bad_state("it belongs to a different request (method, name or arguments differ)")
        return RequestState(call_id, round_, owner, owner_server, owner_digest, expires)


def _bad_state(reason: str) -> JsonRpcError:
    return JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: requestState rejected: {reason}.")


def new_call_id() -> str:
    return secrets.token_urlsafe(12)
