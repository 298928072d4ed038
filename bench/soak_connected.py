"""The soak's clients whose one connection carries a whole session: HTTP+SSE (``sse``) and WebSocket
(``websocket``), and the long-lived WebSocket session (bench/soak_clients.py says what every client does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from soak_clients import (
    CLIENT_INFO,
    LEGACY_VERSIONS,
    OP_TIMEOUT,
    SSE_VERSION,
    Soak,
    Unexpected,
    check_result,
    client_answer,
    common_op,
    http_session,
    opened,
    run_ops,
    sse_events,
)

# -- connections that carry a whole session: HTTP+SSE and WebSocket ---------------------------------


class Connected:
    """A session over one connection: requests go out, everything comes back on the connection, where a
    reader matches answers to requests by id and answers the server's requests."""

    KIND = ""
    OPS = {"echo": 40, "tools/list": 10, "progress": 8, "resources/read": 12, "ping": 10, "elicitation": 5}

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        self.soak, self.http, self.server = soak, http, server
        self.tally = soak.tally(self.KIND)
        self.waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.answering: set[asyncio.Task[None]] = set()  # answers to the server's requests, being sent

    async def open(self) -> None:
        raise NotImplementedError

    async def send(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def take(self, incoming: dict[str, Any]) -> None:
        if "method" in incoming and "id" in incoming:
            task = asyncio.ensure_future(self.send(client_answer(incoming)))
            self.answering.add(task)
            task.add_done_callback(self.answering.discard)
        elif "method" in incoming:
            self.tally.notifications += 1
        else:
            future = self.waiting.pop(incoming.get("id"), None)
            if future is not None and not future.done():
                future.set_result(incoming)

    def lost(self, exc: BaseException | None) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(exc or Unexpected(f"the {self.KIND} connection closed"))
        self.waiting.clear()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        future = self.waiting[request_id] = asyncio.get_running_loop().create_future()
        await self.send(message)
        return check_result(await future, request_id)

    async def handshake(self, version: str) -> None:
        capabilities = {"elicitation": {}, "roots": {"listChanged": True}}
        await self.request(
            "initialize", {"protocolVersion": version, "capabilities": capabilities, "clientInfo": CLIENT_INFO}
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def op(self, name: str) -> None:
        await common_op(self.soak, self.server, self.request, name)


class SseSession(Connected):
    KIND = "sse"

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        super().__init__(soak, http, server)
        self.post_url = ""
        self.response: aiohttp.ClientResponse | None = None

    async def open(self) -> None:
        headers = {**self.soak.auth(), "Accept": "text/event-stream"}
        self.response = await self.http.get(self.soak.url(self.server, "sse"), headers=headers)
        if self.response.status != 200:
            raise Unexpected(f"GET /sse: HTTP {self.response.status}")
        events = sse_events(self.response.content)
        event, data = await anext(events)
        if event != "endpoint":
            raise Unexpected(f"the first event is {event!r}, not endpoint")
        self.post_url = self.soak.base + data if data.startswith("/") else data

        async def read() -> None:
            error: BaseException | None = None
            try:
                async for _event, data in events:
                    self.take(json.loads(data))
            except Exception as exc:
                error = exc
            self.lost(error)

        self.reader = asyncio.ensure_future(read())
        await self.handshake(SSE_VERSION)

    async def send(self, message: dict[str, Any]) -> None:
        headers = {**self.soak.auth(), "Content-Type": "application/json"}
        async with self.http.post(self.post_url, json=message, headers=headers) as response:
            await response.read()
            if response.status != 202:
                raise Unexpected(f"POST message: HTTP {response.status}")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.response is not None:
            self.response.close()


class WebSocketSession(Connected):
    KIND = "websocket"

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        super().__init__(soak, http, server)
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        url = self.soak.url(self.server, "ws").replace("http://", "ws://", 1)
        self.ws = await self.http.ws_connect(url, protocols=("mcp",), headers=self.soak.auth(), heartbeat=None)
        ws = self.ws

        async def read() -> None:
            error: BaseException | None = None
            try:
                async for frame in ws:
                    if frame.type == aiohttp.WSMsgType.TEXT:
                        self.take(json.loads(frame.data))
                    elif frame.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                        break
            except Exception as exc:
                error = exc
            self.lost(error)

        self.reader = asyncio.ensure_future(read())
        await self.handshake(self.soak.rng.choice(LEGACY_VERSIONS))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


async def connected_client(soak: Soak, kind: type[Connected]) -> None:
    """HTTP+SSE or WebSocket sessions, one after the other; closing the connection ends the session."""
    tally = soak.tally(kind.KIND)
    while await soak.proceed():
        async with soak.busy():
            async with http_session() as http:
                client = kind(soak, http, soak.server())
                try:
                    if not await opened(soak, kind.KIND, client.open):
                        continue
                    await run_ops(soak, kind.KIND, soak.ops(client.server, client.OPS), client.op)
                finally:
                    await client.close()
                tally.sessions_closed += 1
            await soak.think_time()


# -- long-lived clients -----------------------------------------------------------------------------


async def hold_websocket(soak: Soak, every: float = 5.0) -> None:
    """One WebSocket session for the whole run, calling a tool every few seconds."""
    kind = "websocket"
    tally = soak.tally(kind)
    while not soak.stop.is_set():
        async with http_session() as http:
            client = WebSocketSession(soak, http, soak.servers[0])
            opened = False
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    await client.open()
                tally.sessions_opened += 1
                opened = True
                while not soak.stop.is_set() and client.reader is not None and not client.reader.done():
                    try:
                        async with asyncio.timeout(OP_TIMEOUT):
                            await client.op("echo")
                        tally.ok("held-echo")
                    except (Exception, TimeoutError) as exc:
                        tally.error("held-echo", exc)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(every):
                            await soak.stop.wait()
            except (Exception, TimeoutError) as exc:
                tally.error("held-open", exc)
                await asyncio.sleep(1)
            finally:
                await client.close()
                tally.sessions_closed += opened
