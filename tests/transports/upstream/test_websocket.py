"""The WebSocket client against a small aiohttp WebSocket server that speaks enough MCP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web

from tests.transports.upstream.conftest import eventually, make_config
from transports.protocol.upstream import UpstreamError, UpstreamTimeout, UpstreamUnavailable, create_client
from transports.protocol.upstream.websocket import WebSocketClient

TOOLS = [{"name": "echo", "inputSchema": {"type": "object"}}]


class WsUpstream:
    """MCP over WebSocket: initialize, tools/list, tools/call (echo, ask, log, slow, garbage, close)."""

    def __init__(self) -> None:
        self.protocols: list[str | None] = []
        self.received: list[dict[str, Any]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[Any]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"ws://127.0.0.1:{self._runner.addresses[0][1]}/ws"

    async def stop(self) -> None:
        for ws in self.sockets:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("mcp",))
        await ws.prepare(request)
        self.protocols.append(ws.ws_protocol)
        self.sockets.append(ws)
        tasks: set[asyncio.Task[None]] = set()
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = orjson.loads(frame.data)
            self.received.append(message)
            if "method" not in message:  # a response to our own request
                self._waiting.pop(message["id"]).set_result(message)
            elif "id" in message:
                task = asyncio.create_task(self.answer(ws, message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        for task in tasks:
            task.cancel()
        return ws

    async def send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await ws.send_str(orjson.dumps(message).decode())

    async def ask(self, ws: web.WebSocketResponse, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = f"srv-{next(self._ids)}"
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        await self.send(ws, {"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return dict(await waiter)

    async def answer(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        rid, method, params = message["id"], message["method"], message.get("params") or {}
        result: dict[str, Any]
        if method == "initialize":
            log = {"level": "info", "data": "before the handshake"}
            await self.send(ws, {"jsonrpc": "2.0", "method": "notifications/message", "params": log})
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "ws"}}
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "tools/call":
            name, args = params["name"], params.get("arguments") or {}
            if name == "echo":
                result = {"content": [{"type": "text", "text": args["text"]}]}
            elif name == "ask":
                reply = await self.ask(ws, "elicitation/create", {"message": "name?", "requestedSchema": {}})
                result = {"content": [{"type": "text", "text": f"hello {reply['result']['content']['name']}"}]}
            elif name == "log":
                log = {"level": "info", "data": args["text"]}
                await self.send(ws, {"jsonrpc": "2.0", "method": "notifications/message", "params": log})
                await asyncio.sleep(args.get("linger", 0))
                result = {"content": [{"type": "text", "text": "logged"}]}
            elif name == "slow":
                await asyncio.sleep(30)
                result = {}
            elif name == "garbage":
                await ws.send_str("this is not json")
                result = {"content": [{"type": "text", "text": "after garbage"}]}
            elif name == "close":
                await ws.close()
                return
            else:
                error = {"code": -32602, "message": f"Unknown tool: {name}"}
                await self.send(ws, {"jsonrpc": "2.0", "id": rid, "error": error})
                return
        else:
            await self.send(ws, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}})
            return
        await self.send(ws, {"jsonrpc": "2.0", "id": rid, "result": result})


@pytest.fixture
async def upstream() -> AsyncIterator[WsUpstream]:
    server = WsUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(upstream: WsUpstream) -> AsyncIterator[WebSocketClient]:
    ws_client = create_client(make_config("websocket", upstream.url))
    assert isinstance(ws_client, WebSocketClient)
    yield ws_client
    await ws_client.aclose()


async def call(client: WebSocketClient, name: str, **kwargs: Any) -> dict[str, Any]:
    return await client.request("tools/call", {"name": name, "arguments": kwargs.pop("arguments", {})}, **kwargs)


async def test_connect_list_and_call(client: WebSocketClient, upstream: WsUpstream) -> None:
    early: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        early.append(message)

    client.set_notification_handler(handler)
    result = await client.connect()
    assert result["serverInfo"]["name"] == "ws"
    assert upstream.protocols == ["mcp"]
    assert early[0]["params"]["data"] == "before the handshake"
    assert (await client.request("tools/list"))["tools"] == TOOLS
    assert (await call(client, "echo", arguments={"text": "over ws"}))["content"][0]["text"] == "over ws"
    assert [m.get("method") for m in upstream.received[:2]] == ["initialize", "notifications/initialized"]


async def test_server_request_goes_to_the_only_call_in_flight(client: WebSocketClient) -> None:
    await client.connect()

    async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
        assert message["method"] == "elicitation/create"
        return {"result": {"action": "accept", "content": {"name": "Lin"}}}

    result = await call(client, "ask", on_message=on_message)
    assert result["content"][0]["text"] == "hello Lin"


async def test_with_several_calls_in_flight_messages_go_to_the_notification_handler(client: WebSocketClient) -> None:
    unattributed: list[dict[str, Any]] = []
    per_call: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        unattributed.append(message)

    async def on_message(message: dict[str, Any]) -> None:
        per_call.append(message)

    await client.connect()
    client.set_notification_handler(handler)
    await asyncio.gather(
        call(client, "log", arguments={"text": "one", "linger": 0.2}, on_message=on_message),
        call(client, "log", arguments={"text": "two", "linger": 0.2}, on_message=on_message),
    )
    assert sorted(m["params"]["data"] for m in unattributed) == ["one", "two"]
    assert per_call == []


async def test_garbage_frames_are_skipped_and_errors_raised(client: WebSocketClient) -> None:
    await client.connect()
    assert (await call(client, "garbage"))["content"][0]["text"] == "after garbage"
    with pytest.raises(UpstreamError) as caught:
        await call(client, "nope")
    assert caught.value.code == -32602


async def test_timeout_sends_cancelled(client: WebSocketClient, upstream: WsUpstream) -> None:
    await client.connect()
    with pytest.raises(UpstreamTimeout):
        await call(client, "slow", timeout=0.2)
    slow_id = next(m["id"] for m in upstream.received if m.get("params", {}).get("name") == "slow")

    async def cancelled() -> bool:
        return any(
            m.get("method") == "notifications/cancelled" and m["params"]["requestId"] == slow_id
            for m in upstream.received
        )

    await eventually(cancelled)


async def test_closed_socket_fails_calls_then_reconnects(client: WebSocketClient, upstream: WsUpstream) -> None:
    await client.connect()
    with pytest.raises(UpstreamUnavailable, match="closed"):
        await asyncio.wait_for(call(client, "close"), 5)
    assert not client.connected
    await client.connect()
    assert (await call(client, "echo", arguments={"text": "again"}))["content"][0]["text"] == "again"
    assert len(upstream.protocols) == 2


async def test_refused_handshake_is_unavailable(upstream: WsUpstream) -> None:
    client = create_client(make_config("websocket", upstream.url.replace("/ws", "/nowhere")))
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.connect()
    assert isinstance(caught.value, UpstreamUnavailable)
    assert caught.value.status == 404
    await client.aclose()
