"""JSON-RPC over plain HTTP: `POST /rpc` and `POST /servers/<name>/rpc`, one request, one JSON answer.

For scripts and health probes that want no session and no SSE. Each request is served statelessly by the
protocol core exactly as a 2026-07-28 request is (``McpCore.handle_stateless``), with an envelope the adapter
supplies: no client capabilities, so a call whose upstream needs the client (elicitation, sampling,
roots) ends with the core's -32021 naming what was missing, instead of waiting for an answer that cannot
come. A body that carries its own 2026-07-28 `_meta` envelope is served with it (and may then continue
`input_required` rounds with `inputResponses` and `requestState`). `ping` is answered too; what only a
session or a stream can carry (initialize, logging/setLevel, resources/subscribe|unsubscribe,
subscriptions/listen) gets -32601 pointing at the MCP endpoint.

HTTP status: 200 for every answer of the core, errors included (the plain JSON-RPC-over-HTTP habit);
400 when the body is not one JSON-RPC request (-32700, -32600; batches are refused), 401 without valid
credentials, 403 for a foreign browser Origin, 404 for an unknown virtual server, 413 for a body over
GATEWAY_MAX_BODY_BYTES, 415 without `Content-Type: application/json`, 503 while no catalog is loaded;
a notification gets 204 and no body.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import Router

from transports import edge
from transports.protocol import jsonrpc, modern, versions
from transports.protocol.catalog import CatalogUnavailable, View
from transports.protocol.exchange import discard
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Caller
from transports.protocol.upstream import headers as mcp_headers
from transports.runtime import get_core

router = Router(tags=["JSON-RPC"])

CLIENT_INFO = {"name": "mcp-gateway/rpc", "version": "1"}
# Methods that need a session or a stream to mean anything (basic/lifecycle, server/utilities/logging,
# server/resources "Subscriptions", 2026-07-28 basic/patterns/subscriptions).
NEEDS_SESSION = frozenset(
    {"initialize", "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "subscriptions/listen"}
)


def _answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(jsonrpc.dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _refuse(status: int, code: int, message: str, request_id: Any = None, **headers: str) -> HttpResponse:
    return _answer(jsonrpc.error_response(request_id, JsonRpcError(code, message)), status, headers)


def _envelope(message: dict[str, Any]) -> modern.Envelope:
    """The request's own 2026-07-28 envelope, or one with no client capabilities."""
    if modern.is_modern(message):
        envelope = modern.parse_envelope(message)
        modern.check_version(envelope)
        return envelope
    return modern.Envelope(versions.MODERN_VERSIONS[0], {}, CLIENT_INFO, None)


def _mirrored_headers(message: dict[str, Any], view: View) -> dict[str, str]:
    """What a 2026-07-28 HTTP client would have sent beside the body: the Mcp-Param-* headers of the
    tool's `x-mcp-header` arguments (streamable-http, "Custom Headers from Tool Parameters"). They pass
    the core's check by construction and ride on to the upstream."""
    params = message.get("params") or {}
    name, arguments = params.get("name"), params.get("arguments")
    tool = view.tool_by_name.get(name) if message["method"] == "tools/call" and isinstance(name, str) else None
    if tool is None or not isinstance(arguments, dict):
        return {}
    annotations = mcp_headers.param_headers(tool.wire.get("inputSchema") or {})
    values = mcp_headers.param_values(annotations or (), arguments)
    return {name.lower(): value for name, value in values.items()}


@router.post("/rpc", auth=None, include_in_schema=False)
async def rpc(request: HttpRequest) -> HttpResponse:
    return await serve(request, None)


@router.post("/servers/{server}/rpc", auth=None, include_in_schema=False)
async def rpc_server(request: HttpRequest, server: str) -> HttpResponse:
    return await serve(request, server)


async def serve(request: HttpRequest, server: str | None) -> HttpResponse:
    """Answer one JSON-RPC request for the whole catalog (``server`` None) or one virtual server."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = request.get_host()  # Django checked it against ALLOWED_HOSTS already
    try:
        caller = await edge.admit(headers, server, transport="rpc")
    except edge.RateRefused as exc:  # 429 with Retry-After; the error names the limit
        return _answer(jsonrpc.error_response(None, exc.error), 429, {"Retry-After": str(exc.retry_after)})
    except edge.EdgeRefused as exc:
        # The edge's headers: the WWW-Authenticate challenge of a 401 (or of an OAuth token's 403), Retry-After.
        extra = {name.decode().title().replace("Www-", "WWW-"): value.decode() for name, value in exc.headers}
        if exc.status == 403:
            # The edge names the MCP endpoint; here it is the JSON-RPC one (a foreign Origin, a server-bound token).
            return _refuse(
                403, jsonrpc.INVALID_REQUEST, exc.message.replace("the MCP endpoint", "the JSON-RPC endpoint"), **extra
            )
        return _refuse(exc.status, jsonrpc.INVALID_REQUEST, exc.message, **extra)
    if (request.content_type or "").lower() != "application/json":
        return _refuse(415, jsonrpc.INVALID_REQUEST, "Unsupported Media Type: send Content-Type: application/json.")
    try:
        body = request.body
    except RequestDataTooBig:
        return _refuse(413, jsonrpc.INVALID_REQUEST, "The request body is larger than GATEWAY_MAX_BODY_BYTES.")
    try:
        payload = jsonrpc.loads(body)
    except JsonRpcError as exc:
        return _refuse(400, exc.code, exc.message)
    if isinstance(payload, list):
        return _refuse(400, jsonrpc.INVALID_REQUEST, "Invalid Request: batches are not accepted; send one request.")
    request_id = payload.get("id") if isinstance(payload, dict) else None
    request_id = request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
    try:
        message = jsonrpc.validate(payload)
    except JsonRpcError as exc:
        return _refuse(400, exc.code, exc.message, request_id)
    kind = jsonrpc.kind(message)
    if kind == "notification":  # nothing to act on without a session
        return HttpResponse(status=204)
    if kind == "response":
        return _refuse(400, jsonrpc.INVALID_REQUEST, "Invalid Request: there is no session here to answer.")
    return await _dispatch(message, caller)


async def _dispatch(message: dict[str, Any], caller: Caller) -> HttpResponse:
    core = get_core()
    request_id, method = message["id"], message["method"]
    try:
        view = await core.view(caller.server)
        if method in NEEDS_SESSION:
            raise JsonRpcError(
                jsonrpc.METHOD_NOT_FOUND,
                f"Method not found: {method} needs a session or a stream; use the MCP endpoint "
                f"({'/servers/' + caller.server if caller.server else ''}/mcp).",
            )
        envelope = _envelope(message)
        if method == "ping":  # gone from 2026-07-28, still what a health probe asks: the core's own answer
            answer = await core.answer(
                core.envelope_session(envelope, caller), message, discard, headers=caller.headers, transport="rpc"
            )
        else:
            mirrored = Caller(caller.username, caller.scopes, caller.server, _mirrored_headers(message, view))
            answer = await core.handle_stateless(message, envelope, mirrored, discard, transport="rpc")
    except CatalogUnavailable as exc:
        return _refuse(503, jsonrpc.INTERNAL_ERROR, str(exc), request_id)
    except JsonRpcError as exc:
        status = 404 if exc.http_status == 404 else 200
        return _answer(jsonrpc.error_response(request_id, exc), status)
    if answer is None:  # cancelled: the client went away
        return HttpResponse(status=204)
    return _answer(answer)
