"""A scripted 2026-07-28 (stateless) Streamable HTTP upstream on aiohttp.web, for what the SDK server never
shows: cache hints, endless input_required rounds, odd answers. Every POST is recorded with its headers.

    upstream = FakeModern()
    upstream.handlers["tools/call"] = lambda request, body: upstream.result(body, {...})
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

VERSION = "2026-07-28"
DISCOVER = {
    "resultType": "complete",
    "supportedVersions": [VERSION],
    "capabilities": {"tools": {"listChanged": True}, "resources": {"subscribe": True}},
    "ttlMs": 0,
    "cacheScope": "private",
    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fake-modern", "version": "2"}},
}

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse] | web.StreamResponse]


class FakeModern:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []  # (headers, JSON body) of each POST
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.closing = asyncio.Event()  # streams that stay open wait on this

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def bodies(self, method: str) -> list[dict[str, Any]]:
        return [body for _, body in self.requests if body.get("method") == method]

    def headers_of(self, method: str) -> list[dict[str, str]]:
        return [headers for headers, body in self.requests if body.get("method") == method]

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
        if request.method != "POST":
            return web.Response(status=405)
        body = orjson.loads(await request.read())
        self.requests.append((dict(request.headers), body))
        method = body.get("method")
        if "id" not in body:
            return web.Response(status=202)
        handler = self.handlers.get(method)
        if handler is not None:
            answer = handler(request, body)
            return answer if isinstance(answer, web.StreamResponse) else await answer
        if method == "server/discover":
            return self.result(body, DISCOVER)
        return self.error(body, -32601, "Method not found", status=404)

    @staticmethod
    def result(body: dict[str, Any], result: dict[str, Any]) -> web.Response:
        payload = orjson.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result})
        return web.Response(body=payload, content_type="application/json")

    @staticmethod
    def error(body: dict[str, Any], code: int, message: str, *, status: int = 200, data: Any = None) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        payload = orjson.dumps({"jsonrpc": "2.0", "id": body.get("id"), "error": error})
        return web.Response(body=payload, content_type="application/json", status=status)
