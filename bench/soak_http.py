"""The soak's Streamable HTTP clients (bench/soak_clients.py says what every client does): the session era
(``http-legacy``) and 2026-07-28 (``http-modern``), and the two long-lived ones, a session holding its GET stream
and a subscriptions/listen stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
from soak_clients import (
    CLIENT_INFO,
    LEGACY_VERSIONS,
    MODERN,
    OP_TIMEOUT,
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

# -- Streamable HTTP, session era -------------------------------------------------------------------


class LegacyHttp:
    """A Streamable HTTP session of the session era."""

    KIND = "http-legacy"
    OPS = {
        "echo": 30,
        "tools/list": 8,
        "progress": 8,
        "resources/read": 10,
        "prompts/get": 5,
        "ping": 10,
        "elicitation": 6,
        "elicitation-cancelled": 2,
        "subscribe": 3,
    }

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str, version: str) -> None:
        self.soak, self.http, self.server, self.version = soak, http, server, version
        self.url = soak.url(server, "mcp")
        self.headers = {**soak.auth(), "Accept": "application/json, text/event-stream"}
        self.tally = soak.tally(self.KIND)
        self.stream_task: asyncio.Task[None] | None = None

    async def post(self, message: dict[str, Any], on_request: bool = True) -> Any:
        """POST one message; the answer to a request (JSON or the last message of an SSE stream), answering
        server-to-client requests that arrive on the stream first."""
        async with self.http.post(self.url, json=message, headers=self.headers) as response:
            if "id" not in message or "method" not in message:
                await response.read()
                if response.status != 202:
                    raise Unexpected(f"{message.get('method', 'a response')}: HTTP {response.status}, not 202")
                return None
            if response.status != 200:
                raise Unexpected(f"{message['method']}: HTTP {response.status}: {(await response.read())[:200]!r}")
            if response.headers.get("Mcp-Session-Id") and "Mcp-Session-Id" not in self.headers:
                self.headers["Mcp-Session-Id"] = response.headers["Mcp-Session-Id"]
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return json.loads(await response.read())
            async for _event, data in sse_events(response.content):
                incoming = json.loads(data)
                if incoming.get("id") == message["id"] and "method" not in incoming:
                    return incoming
                if "method" in incoming and "id" in incoming and on_request:
                    await self.post(client_answer(incoming))
                elif "method" in incoming:
                    self.tally.notifications += 1
            raise Unexpected(f"{message['method']}: the stream ended without the answer")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        return check_result(await self.post(message), request_id)

    async def open(self) -> None:
        capabilities = {"elicitation": {}, "roots": {"listChanged": True}, "sampling": {}}
        result = await self.request(
            "initialize", {"protocolVersion": self.version, "capabilities": capabilities, "clientInfo": CLIENT_INFO}
        )
        if "Mcp-Session-Id" not in self.headers:
            raise Unexpected("initialize: no Mcp-Session-Id")
        self.headers["MCP-Protocol-Version"] = result["protocolVersion"]
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def open_stream(self) -> None:
        """The standalone GET stream, read in the background until the session ends."""

        async def read() -> None:
            headers = {**self.headers, "Accept": "text/event-stream"}
            async with self.http.get(self.url, headers=headers) as response:
                if response.status != 200:
                    raise Unexpected(f"GET stream: HTTP {response.status}")
                async for _event, data in sse_events(response.content):
                    incoming = json.loads(data)
                    if "method" in incoming and "id" in incoming:
                        await self.post(client_answer(incoming))
                    else:
                        self.tally.notifications += 1

        self.stream_task = asyncio.ensure_future(read())

    async def close_stream(self) -> None:
        if self.stream_task is None:
            return
        task, self.stream_task = self.stream_task, None
        if task.done():
            exc = task.exception()
            if exc is not None:
                self.tally.error("get-stream", exc)
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def delete(self) -> None:
        async with self.http.delete(self.url, headers=self.headers) as response:
            await response.read()
            if response.status not in (200, 202, 204):
                raise Unexpected(f"DELETE: HTTP {response.status}")

    async def op(self, name: str) -> None:
        if await common_op(self.soak, self.server, self.request, name):
            return
        if name == "elicitation-cancelled":
            await self.give_up_elicitation()
        elif name == "subscribe":
            await self.request("resources/subscribe", {"uri": "test://watched-resource"})
            await self.request("resources/unsubscribe", {"uri": "test://watched-resource"})

    async def give_up_elicitation(self) -> None:
        """A call that asks the user something the user never answers: the client cancels it
        (notifications/cancelled) and drops the stream."""
        request_id = self.soak.next_id()
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": self.soak.name(self.server, "test_elicitation"), "arguments": {"message": "never"}},
        }
        async with self.http.post(self.url, json=message, headers=self.headers) as response:
            if response.status != 200:
                raise Unexpected(f"tools/call: HTTP {response.status}")
            async for _event, data in sse_events(response.content):
                incoming = json.loads(data)
                if incoming.get("method") == "elicitation/create":
                    break
            else:
                raise Unexpected("no elicitation/create before the stream ended")
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}
        await self.post(cancel)


async def legacy_http_client(soak: Soak, with_stream: float = 0.3) -> None:
    """Sessions of the session era, one after the other, until the run stops."""
    tally = soak.tally(LegacyHttp.KIND)
    while await soak.proceed():
        async with soak.busy():
            async with http_session() as http:
                client = LegacyHttp(soak, http, soak.server(), soak.rng.choice(LEGACY_VERSIONS))
                if not await opened(soak, LegacyHttp.KIND, client.open):
                    continue
                if soak.rng.random() < with_stream:
                    client.open_stream()
                await run_ops(soak, LegacyHttp.KIND, soak.ops(client.server, LegacyHttp.OPS), client.op)
                await client.close_stream()
                # At the end of the run every client closes properly: what stays is what the gateway kept.
                if not soak.stop.is_set() and soak.rng.random() < soak.abandon:
                    tally.sessions_abandoned += 1
                    soak.abandoned_at.append(time.monotonic())
                else:
                    try:
                        async with asyncio.timeout(OP_TIMEOUT):
                            await client.delete()
                        tally.sessions_closed += 1
                    except (Exception, TimeoutError) as exc:
                        tally.error("delete", exc)
            await soak.think_time()


# -- Streamable HTTP, 2026-07-28 --------------------------------------------------------------------


class ModernHttp:
    """Stateless 2026-07-28 requests; a "session" is one client's run of requests on one connection."""

    KIND = "http-modern"
    OPS = {
        "echo": 30,
        "tools/list": 10,
        "server/discover": 5,
        "progress": 6,
        "resources/read": 10,
        "prompts/get": 5,
        "mrtr": 8,
        "mrtr-abandoned": 2,
        "listen": 3,
    }
    CAPABILITIES = {"elicitation": {"form": {}}, "roots": {}, "sampling": {}}

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        self.soak, self.http, self.server, self.url = soak, http, server, soak.url(server, "mcp")
        self.tally = soak.tally(self.KIND)

    def body(self, method: str, params: dict[str, Any], request_id: Any) -> dict[str, Any]:
        meta = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": self.CAPABILITIES,
            "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
            **params.get("_meta", {}),
        }
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}

    def headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        headers = {
            **self.soak.auth(),
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
        }
        name = params.get("name") or params.get("uri")
        if name:
            headers["Mcp-Name"] = name
        return headers

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = params or {}
        request_id = self.soak.next_id()
        body = self.body(method, params, request_id)
        async with self.http.post(self.url, json=body, headers=self.headers(method, params)) as response:
            if response.status != 200:
                raise Unexpected(f"{method}: HTTP {response.status}: {(await response.read())[:200]!r}")
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                return check_result(json.loads(await response.read()), request_id)
            async for _event, data in sse_events(response.content):
                incoming = json.loads(data)
                if "method" in incoming:
                    self.tally.notifications += 1
                else:
                    return check_result(incoming, request_id)
        raise Unexpected(f"{method}: the stream ended without the answer")

    async def op(self, name: str) -> None:
        if await common_op(self.soak, self.server, self.request, name):
            return
        if name == "server/discover":
            if MODERN not in (await self.request("server/discover")).get("supportedVersions", []):
                raise Unexpected("server/discover does not list 2026-07-28")
        elif name in ("mrtr", "mrtr-abandoned"):
            await self.mrtr(complete=name == "mrtr")
        elif name == "listen":
            await self.listen(self.soak.rng.uniform(0.2, 2.0))

    async def mrtr(self, *, complete: bool) -> None:
        """A call that needs the user (input_required), retried with the answer, or (``complete`` false)
        never retried, as a client that gave up would."""
        params: dict[str, Any] = {
            "name": self.soak.name(self.server, "test_input_required_result_elicitation"),
            "arguments": {},
        }
        first = await self.request("tools/call", params)
        if first.get("resultType") != "input_required" or not first.get("inputRequests"):
            raise Unexpected(f"no input_required: {str(first)[:200]}")
        if not complete:
            return
        answers = {key: client_answer(asked)["result"] for key, asked in first["inputRequests"].items()}
        retry = {**params, "inputResponses": answers}
        if first.get("requestState") is not None:
            retry["requestState"] = first["requestState"]
        final = await self.request("tools/call", retry)
        if final.get("resultType", "complete") != "complete" or final.get("isError"):
            raise Unexpected(f"the retried call did not complete: {str(final)[:200]}")

    async def listen(self, seconds: float) -> None:
        """subscriptions/listen: the acknowledgement, then the stream is held a little and closed."""
        params = {"notifications": {"toolsListChanged": True, "promptsListChanged": True}}
        request_id = self.soak.next_id()
        body = self.body("subscriptions/listen", params, request_id)
        async with self.http.post(self.url, json=body, headers=self.headers("subscriptions/listen", {})) as response:
            if response.status != 200:
                raise Unexpected(f"subscriptions/listen: HTTP {response.status}")
            events = sse_events(response.content)
            _event, data = await anext(events)
            if json.loads(data).get("method") != "notifications/subscriptions/acknowledged":
                raise Unexpected(f"subscriptions/listen: first came {data[:200]}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    async for _event, _data in events:
                        self.tally.notifications += 1


async def modern_http_client(soak: Soak) -> None:
    tally = soak.tally(ModernHttp.KIND)
    while await soak.proceed():
        async with soak.busy():
            async with http_session() as http:
                tally.sessions_opened += 1
                client = ModernHttp(soak, http, soak.server())
                await run_ops(soak, ModernHttp.KIND, soak.ops(client.server, ModernHttp.OPS), client.op)
                tally.sessions_closed += 1
            await soak.think_time()


# -- long-lived clients -----------------------------------------------------------------------------


async def hold_get_stream(soak: Soak) -> None:
    """One session-era session that only listens: its GET stream open for the whole run, no requests (a
    client waiting for notifications)."""
    kind = LegacyHttp.KIND
    tally = soak.tally(kind)
    while not soak.stop.is_set():
        async with http_session() as http:
            client = LegacyHttp(soak, http, soak.servers[0], LEGACY_VERSIONS[0])
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    await client.open()
                tally.sessions_opened += 1
                client.open_stream()
                assert client.stream_task is not None
                await asyncio.wait(
                    {client.stream_task, asyncio.ensure_future(soak.stop.wait())}, return_when=asyncio.FIRST_COMPLETED
                )
                if not soak.stop.is_set():
                    tally.error("held-get-stream", Unexpected("the GET stream ended before the run did"))
                await client.close_stream()
                async with asyncio.timeout(OP_TIMEOUT):
                    await client.delete()
                tally.sessions_closed += 1
            except (Exception, TimeoutError) as exc:
                tally.error("held-get-stream", exc)
                await asyncio.sleep(1)


async def hold_listen(soak: Soak) -> None:
    """One 2026-07-28 subscriptions/listen stream for the whole run."""
    kind = ModernHttp.KIND
    tally = soak.tally(kind)
    while not soak.stop.is_set():
        async with http_session() as http:
            client = ModernHttp(soak, http, soak.servers[0])
            listening = asyncio.ensure_future(client.listen(1e9))
            stopping = asyncio.ensure_future(soak.stop.wait())
            await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if listening.done():
                exc = listening.exception() or Unexpected("the listen stream ended before the run did")
                tally.error("held-listen", exc)
                await asyncio.sleep(1)
            else:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await listening
