"""An upstream MCP server that misbehaves on request, for the fault-injection tests (tests/faults/).

Raw aiohttp rather than the `mcp` SDK: the SDK is written to behave, and these tools must break the rules
in exact, repeatable ways (hold a call forever, flood, answer with more bytes than any client should take).
It speaks the session era of Streamable HTTP (MCP 2025-11-25): `initialize` hands out an `Mcp-Session-Id`,
a request naming an unknown session gets 404 (so a gateway that reconnects after a restart re-initializes),
GET has no standalone stream (405), DELETE ends the session.

    python tests/faults/misbehaving_upstream.py --port 8766      # http://127.0.0.1:8766/mcp

Tools (arguments in brackets):

- `bad_echo` [text]: answers at once, as JSON.
- `bad_hang` [stream]: never answers. With `stream` true the answer is an SSE stream that sends one event (with
  an id, so a client may try to resume it) and then nothing; otherwise no response headers are ever sent.
- `bad_slow` [seconds]: answers after `seconds`.
- `bad_flood` [count, kind]: an SSE stream of `count` notifications (`progress` for the call's progressToken, or
  `log` messages) sent as fast as the socket takes them, then the answer; `count` 0 floods until the client
  goes away.
- `bad_big` [size, stream]: a text result of `size` bytes, as one JSON body or one SSE event.

`GET /state` answers {"inflight": calls in progress, "calls": calls received, "cancelled": notifications/cancelled
received}, so a test can tell that a call has reached the upstream before it injects the fault.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"
VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")


def _schema(**properties: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": kind} for name, kind in properties.items()}}


TOOLS = [
    {"name": "bad_echo", "description": "Answers at once.", "inputSchema": _schema(text="string")},
    {"name": "bad_hang", "description": "Never answers.", "inputSchema": _schema(stream="boolean")},
    {"name": "bad_slow", "description": "Answers after a while.", "inputSchema": _schema(seconds="number")},
    {
        "name": "bad_flood",
        "description": "Floods notifications, then answers.",
        "inputSchema": _schema(count="integer", kind="string"),
    },
    {
        "name": "bad_big",
        "description": "Answers with a huge result.",
        "inputSchema": _schema(size="integer", stream="boolean"),
    },
]


class Upstream:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.inflight = 0
        self.calls = 0
        self.cancelled = 0

    # -- HTTP ---------------------------------------------------------------------------------------------

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response({"inflight": self.inflight, "calls": self.calls, "cancelled": self.cancelled})

    async def get(self, request: web.Request) -> web.Response:
        return web.Response(status=405, headers={"Allow": "POST, DELETE"})

    async def delete(self, request: web.Request) -> web.Response:
        self.sessions.discard(request.headers.get("Mcp-Session-Id", ""))
        return web.Response(status=200)

    async def post(self, request: web.Request) -> web.StreamResponse:
        message = json.loads(await request.read())
        method = message.get("method")
        if "id" not in message or method is None:  # a notification or a response: nothing to answer
            if method == "notifications/cancelled":
                self.cancelled += 1
            return web.Response(status=202)
        if method == "initialize":
            session = secrets.token_hex(16)
            self.sessions.add(session)
            asked = (message.get("params") or {}).get("protocolVersion")
            result = {
                "protocolVersion": asked if asked in VERSIONS else VERSIONS[0],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "misbehaving-upstream", "version": "1"},
            }
            return self._json(message, result, {"Mcp-Session-Id": session})
        if request.headers.get("Mcp-Session-Id") not in self.sessions:
            return web.json_response(
                {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32001, "message": "Session not found"}},
                status=404,
            )
        if method == "ping":
            return self._json(message, {})
        if method == "tools/list":
            return self._json(message, {"tools": TOOLS})
        if method == "tools/call":
            self.calls += 1
            self.inflight += 1
            try:
                return await self.call(request, message)
            finally:
                self.inflight -= 1
        return web.json_response(
            {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": f"Method not found: {method}"}}
        )

    @staticmethod
    def _json(message: dict[str, Any], result: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result}, headers=headers)

    # -- tools --------------------------------------------------------------------------------------------

    async def call(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        params = message.get("params") or {}
        name, arguments = params.get("name"), params.get("arguments") or {}
        token = (params.get("_meta") or {}).get("progressToken")
        if name == "bad_echo":
            return self._json(message, _text(str(arguments.get("text", ""))))
        if name == "bad_slow":
            await asyncio.sleep(float(arguments.get("seconds", 1)))
            return self._json(message, _text("slow answer"))
        if name == "bad_hang":
            if not arguments.get("stream"):
                await asyncio.Event().wait()
            stream = await _open_stream(request)
            await stream.write(b"id: hang-1\nretry: 200\ndata: \n\n")
            await asyncio.Event().wait()
        if name == "bad_flood":
            return await self.flood(request, message, int(arguments.get("count", 0)), arguments.get("kind"), token)
        if name == "bad_big":
            result = _text("x" * int(arguments.get("size", 0)))
            if not arguments.get("stream"):
                return self._json(message, result)
            stream = await _open_stream(request)
            await stream.write(_event({"jsonrpc": "2.0", "id": message["id"], "result": result}))
            await stream.write_eof()
            return stream
        return self._json(message, {**_text(f"unknown tool {name}"), "isError": True})

    async def flood(
        self, request: web.Request, message: dict[str, Any], count: int, kind: Any, token: Any
    ) -> web.StreamResponse:
        stream = await _open_stream(request)
        sent = 0
        batch: list[bytes] = []
        while count == 0 or sent < count:
            sent += 1
            if kind == "log":
                note = {"method": "notifications/message", "params": {"level": "info", "data": f"flood {sent}"}}
            else:
                note = {"method": "notifications/progress", "params": {"progressToken": token, "progress": sent}}
            batch.append(_event({"jsonrpc": "2.0", **note}))
            if len(batch) == 100:  # one write per hundred events: as fast as the socket takes them
                await stream.write(b"".join(batch))
                batch.clear()
        batch.append(_event({"jsonrpc": "2.0", "id": message["id"], "result": _text(f"flooded {sent}")}))
        await stream.write(b"".join(batch))
        await stream.write_eof()
        return stream


def _text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + json.dumps(message, separators=(",", ":")).encode() + b"\n\n"


async def _open_stream(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    return stream


def app() -> web.Application:
    upstream = Upstream()
    application = web.Application(client_max_size=16 * 1024 * 1024)
    application.router.add_post("/mcp", upstream.post)
    application.router.add_get("/mcp", upstream.get)
    application.router.add_delete("/mcp", upstream.delete)
    application.router.add_get("/state", upstream.state)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # handler_cancellation: a call the client gave up on (closed its connection) stops here too, so `inflight`
    # counts only calls someone still waits for.
    web.run_app(
        app(), host=HOST, port=args.port, print=None, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
    )


if __name__ == "__main__":
    main()
