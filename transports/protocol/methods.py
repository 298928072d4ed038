"""The MCP method table shared by both eras: lists, calls, reads, prompts, completion, subscriptions.

``Methods.handle`` answers one request in an ``Exchange``; a tools/call goes to the tool's backend,
resources, prompts and completions of upstream entries to the upstream relay, local ones are
answered from the snapshot. Era differences live outside (``stateless_handler`` for 2026-07-28).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from transports.protocol import hooks, jsonrpc, limits, observe
from transports.protocol import vocabulary as mcp
from transports.protocol.backends import CallContext, ToolBackends
from transports.protocol.catalog import ToolEntry, page
from transports.protocol.exchange import Exchange
from transports.protocol.fanout import Fanout, resource_origin
from transports.protocol.json_schema import describe, first_error
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.relay import UpstreamRelay
from transports.protocol.sessions import SessionStore
from transports.protocol.shared_sessions import RedisSessionStore

logger = logging.getLogger(__name__)

_MODERN_RESULT_FIELDS = frozenset({"resultType", "ttlMs", "cacheScope"})

# (template, declared arguments, given arguments) -> text; ValueError with a message for the client.
PromptRenderer = Callable[[str, list[dict[str, Any]], dict[str, str]], str]
Method = Callable[[dict[str, Any], Exchange], Awaitable[dict[str, Any]]]


def already_initialized() -> JsonRpcError:
    return JsonRpcError(jsonrpc.INVALID_REQUEST, "The session is already initialized.")


def _forbidden(what: str) -> JsonRpcError:
    return JsonRpcError(jsonrpc.SERVER_ERROR, f"Forbidden: your credentials do not allow {what}.")


def _no_renderer(template: str, declared: list[dict[str, Any]], given: dict[str, str]) -> str:
    raise ValueError("local prompts cannot be rendered in this process")


def session_era_result(result: dict[str, Any]) -> dict[str, Any]:
    """A modern upstream's answer for a session client: without the 2026-07-28 result fields and the
    upstream's own serverInfo (the client met the gateway at initialize, not the upstream)."""
    cleaned = {k: v for k, v in result.items() if k not in _MODERN_RESULT_FIELDS}
    meta = cleaned.get("_meta")
    if isinstance(meta, dict) and mcp.META_SERVER_INFO in meta:
        rest = {k: v for k, v in meta.items() if k != mcp.META_SERVER_INFO}
        if rest:
            cleaned["_meta"] = rest
        else:
            del cleaned["_meta"]
    return cleaned


class Methods:
    """The method table: one coroutine per MCP method, all reading the exchange's snapshot view."""

    def __init__(
        self,
        *,
        sessions: SessionStore | RedisSessionStore,
        relay: UpstreamRelay,
        fanout: Fanout,
        backends: ToolBackends,
        page_size: int,
        tool_timeout: float,
        prompt_renderer: PromptRenderer | None = None,
        recorder: observe.Recorder | None = None,
    ) -> None:
        self.sessions = sessions
        self.relay = relay
        self.fanout = fanout
        self.backends = backends
        self.page_size = page_size
        self.tool_timeout = tool_timeout
        self.render_prompt = prompt_renderer or _no_renderer
        self.recorder = recorder if recorder is not None else observe.recorder
        self.table: dict[str, Method] = {
            mcp.PING: self.ping,
            mcp.TOOLS_LIST: self.tools_list,
            mcp.TOOLS_CALL: self.tools_call,
            mcp.RESOURCES_LIST: self.resources_list,
            mcp.RESOURCES_TEMPLATES_LIST: self.templates_list,
            mcp.RESOURCES_READ: self.resources_read,
            mcp.RESOURCES_SUBSCRIBE: self.resources_subscribe,
            mcp.RESOURCES_UNSUBSCRIBE: self.resources_unsubscribe,
            mcp.PROMPTS_LIST: self.prompts_list,
            mcp.PROMPTS_GET: self.prompts_get,
            "completion/complete": self.complete,
            mcp.LOGGING_SET_LEVEL: self.set_level,
        }

    def __contains__(self, method: str) -> bool:
        return method in self.table

    async def handle(self, message: dict[str, Any], exchange: Exchange) -> dict[str, Any] | None:
        """Answer one request; None when it was cancelled (nothing is sent for it)."""
        method = message["method"]
        request_id = message["id"]
        handler = self.table.get(method)
        if handler is None:
            error = already_initialized() if method == mcp.INITIALIZE else None
            error = error or JsonRpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
            return jsonrpc.error_response(request_id, error)
        session = exchange.session
        task = asyncio.current_task()
        if task is not None:
            session.in_flight[request_id] = task
        try:
            result = await handler(message.get("params") or {}, exchange)
        except JsonRpcError as error:
            return jsonrpc.error_response(request_id, error)
        except asyncio.CancelledError:
            if session.in_flight.get(request_id) is task and task is not None and task.cancelling():
                task.uncancel()
                return None
            raise
        except Exception:
            logger.exception("Error while handling %s", method)
            return jsonrpc.error_response(request_id, JsonRpcError(jsonrpc.INTERNAL_ERROR, "Internal error"))
        finally:
            session.in_flight.pop(request_id, None)
        if not exchange.modern and ("resultType" in result or "_meta" in result):
            result = session_era_result(result)
        return jsonrpc.response(request_id, result)

    # -- lists ----------------------------------------------------------------------------------

    def _page(self, entries: tuple[Any, ...], key: str, params: dict[str, Any], field: str) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: cursor must be a string.")
        try:
            chunk, next_cursor = page(entries, key, cursor, self.page_size)
        except ValueError:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: unknown cursor.") from None
        result: dict[str, Any] = {field: [entry.wire for entry in chunk]}
        if next_cursor:
            result["nextCursor"] = next_cursor
        return result

    async def ping(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return {}

    async def tools_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.tools, "name", params, "tools")

    async def resources_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.resources, "uri", params, "resources")

    async def templates_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.templates, "uri_template", params, "resourceTemplates")

    async def prompts_list(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        return self._page(ex.view.prompts, "name", params, "prompts")

    # -- tools ----------------------------------------------------------------------------------

    async def tools_call(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        """Every tools/call of both eras comes here, and is counted here (``observe``: per tool and
        gateway; an error is a JSON-RPC error or an ``isError`` result)."""
        started = self.recorder.clock()
        name = params.get("name")
        tool = ex.view.tool_by_name.get(name) if isinstance(name, str) else None
        counted, gateway = (tool.name, tool.gateway or observe.LOCAL) if tool else (observe.UNKNOWN_TOOL, observe.LOCAL)
        try:
            result = await self._tools_call(name, tool, params, ex)
        except asyncio.CancelledError:
            self.recorder.record(counted, gateway, False, started)
            if hooks.tool_called.connected:
                await self._tool_called(ex, counted, gateway, "cancelled", "", started, params)
            raise
        except BaseException as exc:
            self.recorder.record(counted, gateway, True, started)
            if hooks.tool_called.connected:
                message = exc.message if isinstance(exc, JsonRpcError) else type(exc).__name__
                await self._tool_called(ex, counted, gateway, "error", message, started, params)
            raise
        failed = bool(result.get("isError"))
        self.recorder.record(counted, gateway, failed, started)
        if hooks.tool_called.connected:
            await self._tool_called(ex, counted, gateway, "error" if failed else "ok", "", started, params)
        return result

    async def _tool_called(
        self, ex: Exchange, tool: str, gateway: str, outcome: str, error: str, started: float, params: dict[str, Any]
    ) -> None:
        session = ex.session
        ended = self.recorder.clock()
        await hooks.tool_called.send(
            hooks.ToolCalled(
                username=session.username,
                server=session.server,
                session=getattr(session, "id", "") or "",
                tool=tool,
                gateway=gateway,
                outcome=outcome,
                error=error,
                seconds=ended - started,
                ended_at=self.recorder.wall(),
                arguments=params.get("arguments"),
            )
        )

    async def _tools_call(
        self, name: Any, tool: ToolEntry | None, params: dict[str, Any], ex: Exchange
    ) -> dict[str, Any]:
        if not isinstance(name, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: tools/call needs a tool name.")
        arguments = params.get("arguments", {})
        if not isinstance(arguments, dict):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: arguments must be an object.")
        if tool is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
        if "call" not in ex.session.scopes:
            raise _forbidden("calling tools (scope 'call')")
        backend = self.backends.get(tool.integration_type)
        if backend is None:  # the snapshot only holds servable tools; the backend left since
            raise JsonRpcError(
                jsonrpc.SERVER_ERROR, f"Tool {name!r} cannot be called: no {tool.integration_type} backend is enabled."
            )
        if tool.input_validator is not None:
            failure = first_error(tool.input_validator, arguments)
            if failure is not None:
                return _invalid_arguments(name, failure, ex)
        limiter = limits.active()  # per tool (and user), per gateway (everyone): no store call when none is set
        buckets = limiter.call_buckets(ex.session.username, name, tool.rate_limit, tool.gateway, ex.snapshot.upstreams)
        if buckets:
            try:
                await limiter.take(buckets)
            except limits.RateLimited as exc:
                raise exc.error() from None
        context = CallContext(tool=tool, params=params, timeout=tool.timeout or self.tool_timeout, exchange=ex)
        return await backend.call(arguments, context)

    # -- resources ------------------------------------------------------------------------------

    async def resources_read(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/read needs a uri.")
        resource = ex.view.resource_by_uri.get(uri)
        if resource is not None and resource.gateway is None:
            content: dict[str, Any] = {"uri": uri}
            if resource.mime_type:
                content["mimeType"] = resource.mime_type
            if resource.blob is not None:
                content["blob"] = base64.b64encode(resource.blob).decode()
            else:
                content["text"] = resource.text or ""
            return {"contents": [content]}
        if resource is not None and resource.gateway is not None:
            gateway, upstream_uri = resource.gateway, resource.upstream_uri
        else:
            template = ex.view.template_for(uri)
            if template is None or template.gateway is None:
                raise JsonRpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
            gateway, upstream_uri = template.gateway, uri
        result = await self.relay.request(ex, gateway, mcp.RESOURCES_READ, {**params, "uri": upstream_uri})
        if upstream_uri != uri:
            for item in result.get("contents", []):
                if isinstance(item, dict) and item.get("uri") == upstream_uri:
                    item["uri"] = uri
        return result

    async def resources_subscribe(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/subscribe needs a uri.")
        origin = resource_origin(ex.view, uri)
        if origin is None:
            raise JsonRpcError(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {uri}", {"uri": uri})
        if uri in ex.session.subscriptions:
            return {}
        gateway, upstream_uri = origin
        if gateway is not None:  # one upstream subscription however many sessions follow the resource
            await self.fanout.follow(ex, gateway, upstream_uri, ex.session.id)
        ex.session.subscriptions.add(uri)
        await self.sessions.save(ex.session, "subscriptions")
        return {}

    async def resources_unsubscribe(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: resources/unsubscribe needs a uri.")
        if uri in ex.session.subscriptions:
            ex.session.subscriptions.discard(uri)
            await self.sessions.save(ex.session, "subscriptions")
            origin = resource_origin(ex.view, uri)
            if origin is not None and origin[0] is not None:
                await self.fanout.unfollow(ex, origin[0], origin[1], ex.session.id)
        return {}

    # -- prompts and completion -----------------------------------------------------------------

    async def prompts_get(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: prompts/get needs a prompt name.")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict) or not all(isinstance(v, str) for v in arguments.values()):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: prompt arguments must be an object of strings.")
        prompt = ex.view.prompt_by_name.get(name)
        if prompt is None:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}")
        if prompt.gateway is not None:
            return await self.relay.request(
                ex, prompt.gateway, mcp.PROMPTS_GET, {**params, "name": prompt.upstream_name, "arguments": arguments}
            )
        try:
            text = self.render_prompt(prompt.template, prompt.arguments, arguments)
        except ValueError as exc:
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}") from None
        result: dict[str, Any] = {"messages": [{"role": "user", "content": {"type": "text", "text": text}}]}
        if prompt.wire.get("description"):
            result["description"] = prompt.wire["description"]
        return result

    async def complete(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        ref = params.get("ref")
        if not isinstance(ref, dict) or not isinstance(params.get("argument"), dict):
            raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: completion/complete needs ref and argument.")
        empty = {"completion": {"values": [], "total": 0, "hasMore": False}}
        if ref.get("type") == "ref/prompt":
            prompt = ex.view.prompt_by_name.get(str(ref.get("name")))
            if prompt is None:
                raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {ref.get('name')}")
            if prompt.gateway is None:
                return empty
            upstream_ref = {**ref, "name": prompt.upstream_name}
            return await self.relay.request(ex, prompt.gateway, "completion/complete", {**params, "ref": upstream_ref})
        if ref.get("type") == "ref/resource":
            uri = str(ref.get("uri"))
            template = next((t for t in ex.view.templates if t.uri_template == uri), None)
            if template is None:
                raise JsonRpcError(jsonrpc.INVALID_PARAMS, f"Unknown resource template: {uri}")
            if template.gateway is None:
                return empty
            return await self.relay.request(ex, template.gateway, "completion/complete", params)
        raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource.")

    async def set_level(self, params: dict[str, Any], ex: Exchange) -> dict[str, Any]:
        level = params.get("level")
        if level not in mcp.LOG_LEVELS:
            raise JsonRpcError(
                jsonrpc.INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(mcp.LOG_LEVELS)}."
            )
        ex.session.log_level = str(level)
        await self.sessions.save(ex.session, "log_level")
        return {}


# SEP-1303 (2025-11-25 server/tools "Error Handling"): arguments that fail the tool's input schema are
# a tool execution error, so the model reads the message and corrects the call; earlier revisions
# listed them as a protocol error (-32602), which is what their clients expect.
ARGUMENT_ERRORS_AS_RESULTS_SINCE = "2025-11-25"


def _invalid_arguments(name: str, failure: tuple[str, str], ex: Exchange) -> dict[str, Any]:
    """A wrapped tool's arguments failed its input schema (checked by the gateway: no upstream will)."""
    message = describe(failure, subject=f"Invalid arguments for tool {name!r}")
    if ex.session.protocol_version >= ARGUMENT_ERRORS_AS_RESULTS_SINCE:
        return {"content": [{"type": "text", "text": message}], "isError": True}
    raise JsonRpcError(jsonrpc.INVALID_PARAMS, message, {"field": failure[0] or "/"})
