"""A scripted Streamable HTTP upstream on aiohttp.web, for behaviour the SDK server never shows
(garbage, odd statuses, early notifications, GET streams that close)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

INIT_RESULT = {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "fake", "version": "0"},
}

ToolHandler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


def sse_event(message: Any = None, *, event_id: str | None = None, retry: int | None = None, raw: str = "") -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if retry is not None:
        lines.append(f"retry: {retry}")
    if raw:
        lines.append(f"data: {raw}")
    elif message is not None:
        lines.append("data: " + orjson.dumps(message).decode())
    else:
        lines.append("data: ")
    return ("\n".join(lines) + "\n\n").encode()


async def sse_response(request: web.Request, *chunks: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


class FakeUpstream:
    def __init__(self) -> None:
        self.tools: dict[str, ToolHandler] = {}
        self.requests: list[tuple[str, dict[str, str], Any]] = []  # (HTTP method, headers, JSON body)
        self.peers: list[Any] = []  # the client's address for each request: tells connections apart
        self.session_id = "fake-session-1"
        self.initialize: ToolHandler | None = None
        self.get_handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
        # A 2026-07-28 request gets a plain 400 without a JSON-RPC body (a server of the session era).
        self.refuse_modern = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.closing = asyncio.Event()  # streams that stay open wait on this

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/mcp", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = orjson.loads(body) if body else None
        self.requests.append((request.method, dict(request.headers), payload))
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if request.method == "GET":
            if self.get_handler is not None:
                return await self.get_handler(request)
            return web.Response(status=405)
        if request.method == "DELETE":
            return web.Response(status=200)
        if self.refuse_modern and request.headers.get("MCP-Protocol-Version") == "2026-07-28":
            return web.Response(status=400, text="Bad Request: unsupported protocol version")
        assert isinstance(payload, dict)
        if "method" not in payload or "id" not in payload:
            return web.Response(status=202)
        if payload["method"] == "initialize":
            if self.initialize is not None:
                return await self.initialize(request, payload)
            return self.json(payload, INIT_RESULT, session=True)
        if payload["method"] == "tools/call":
            return await self.tools[payload["params"]["name"]](request, payload)
        return self.json(payload, {"tools": []})

    def json(self, payload: dict[str, Any], result: dict[str, Any], *, session: bool = False) -> web.Response:
        headers = {"Mcp-Session-Id": self.session_id} if session else {}
        body = orjson.dumps({"jsonrpc": "2.0", "id": payload["id"], "result": result})
        return web.Response(body=body, content_type="application/json", headers=headers)
