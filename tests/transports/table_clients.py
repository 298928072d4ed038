"""The clients of the transport conformance table (test_transport_table.py): one adapter per way a client
reaches the gateway, each with the same async methods, so that one test drives any of them.

Real clients underneath: the official `mcp` SDK's `Client` (2.x) drives every transport that has a session or
a stream: Streamable HTTP in the session era (`mode="legacy"`, 2025-11-25) and statelessly
(`mode="2026-07-28"`), legacy HTTP+SSE (`sse_client`), the stdio wrapper (`stdio_client` launching
`scripts/mcp-gateway-stdio`, in both eras), and WebSocket through `websocket_transport` below: aiohttp's
WebSocket client offering the `mcp` subprotocol, one JSON-RPC message per text frame (the mcp 2.x SDK ships
no WebSocket client; this is what mcp 1.x's `websocket_client` was). `POST /rpc` is one httpx request per
message. Every SDK transport is tapped (`tapped`): the adapter keeps each JSON-RPC message that crossed it,
both ways, so a test can say what was and was not on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
import anyio
import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import TypeAdapter

from tests.live_gateway import LiveGateway
from tests.transports.test_stdio_bridge import wrapper

MODERN = "2026-07-28"
SESSION_ERA = "2025-11-25"
TIMEOUT = 15.0
ANY_RESULT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


class RawRequest(types.Request[dict[str, Any] | None, str]):
    """Any method with any params, sent through the SDK session as they are (unknown and malformed ones too)."""


OnProgress = Callable[[float, float | None, str | None], Awaitable[None]]
Wire = list[tuple[str, dict[str, Any]]]


def as_json(message: Any) -> dict[str, Any]:
    """A JSON-RPC message (an SDK model or a dict) as plain JSON."""
    if hasattr(message, "model_dump"):
        return message.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(message)


# -- transports for the SDK ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sdk_streams(
    received: AsyncIterator[SessionMessage], send: Callable[[SessionMessage], Awaitable[None]]
) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams an SDK transport yields, fed from ``received`` and drained into ``send``."""
    feed, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, drain = anyio.create_memory_object_stream[SessionMessage](0)

    async def pump_in() -> None:
        async with feed:
            async for message in received:
                with contextlib.suppress(anyio.BrokenResourceError):  # (the session has ended)
                    await feed.send(message)

    async def pump_out() -> None:
        async with drain:
            async for message in drain:
                await send(message)

    async with anyio.create_task_group() as group:
        group.start_soon(pump_in)
        group.start_soon(pump_out)
        try:
            yield read_stream, write_stream
        finally:
            group.cancel_scope.cancel()
            for stream in (feed, read_stream, write_stream, drain):
                stream.close()


@contextlib.asynccontextmanager
async def websocket_transport(url: str, headers: dict[str, str]) -> AsyncIterator[tuple[Any, Any]]:
    """An SDK transport over a WebSocket that offers the `mcp` subprotocol: one message per text frame."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, protocols=("mcp",), headers=headers) as ws:
        assert ws.protocol == "mcp", ws.protocol

        async def frames() -> AsyncIterator[SessionMessage]:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    return
                yield SessionMessage(types.jsonrpc_message_adapter.validate_json(frame.data, by_name=False))

        async def send(message: SessionMessage) -> None:
            await ws.send_str(message.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with sdk_streams(frames(), send) as streams:
            yield streams


@contextlib.asynccontextmanager
async def tapped(transport: Any, wire: Wire) -> AsyncIterator[tuple[Any, Any]]:
    """``transport`` with every JSON-RPC message that passes recorded in ``wire`` as ("in"|"out", message).
    The SDK's own SessionMessage objects pass through untouched (their metadata carries the request's
    headers and its resumption hints)."""
    async with transport as (read, write):

        async def received() -> AsyncIterator[SessionMessage]:
            async for item in read:
                if isinstance(item, SessionMessage):
                    wire.append(("in", as_json(item.message)))
                yield item

        async def send(message: SessionMessage) -> None:
            wire.append(("out", as_json(message.message)))
            await write.send(message)

        async with sdk_streams(received(), send) as streams:
            yield streams


# -- what the client answers when the gateway asks ------------------------------------------------------------


class Answers:
    """The client's elicitation and sampling callbacks: they accept, and remember what they were asked."""

    ELICITED: ClassVar[dict[str, Any]] = {"username": "ada", "email": "ada@example.com"}
    SAMPLED = "42"

    def __init__(self) -> None:
        self.elicited: list[str] = []
        self.sampled: list[str] = []

    async def elicit(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content=self.ELICITED)

    async def sample(self, context: Any, params: Any) -> types.CreateMessageResult:
        self.sampled.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=self.SAMPLED), model="table-model"
        )


# -- the adapters ---------------------------------------------------------------------------------------------


class TableClient:
    """One client of one transport. `era` says which protocol shape it speaks: "session" (initialize, a
    session, server-to-client requests and notifications), "stateless" (2026-07-28: no handshake,
    input_required rounds, subscriptions/listen) or "one-shot" (/rpc: one request, one answer)."""

    transport: ClassVar[str]
    era: ClassVar[str]

    def __init__(self, gateway: LiveGateway, answers: Answers) -> None:
        self.gateway = gateway
        self.answers = answers
        self.wire: Wire = []
        self.session_id: str | None = None  # the gateway's session, where the client is told its id
        self.http: httpx2.AsyncClient | None = None  # closed with the client

    async def __aenter__(self) -> TableClient:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        raise NotImplementedError

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any request; its answer as {"result": ...} or {"error": {...}}."""
        raise NotImplementedError

    async def list_page(self, method: str, cursor: str | None) -> dict[str, Any]:
        """One page of a list (the result)."""
        raise NotImplementedError

    async def call_tool(
        self, name: str, arguments: dict[str, Any], on_progress: OnProgress | None = None
    ) -> dict[str, Any]:
        """tools/call, with the client answering whatever the gateway asks on the way; the result as JSON."""
        raise NotImplementedError

    async def cancel_call(self, name: str, arguments: dict[str, Any], started: Callable[[], Awaitable[None]]) -> Any:
        """Start a call, wait until ``started()`` returns (the upstream has it), then cancel it the way this
        transport does; the cancelled request's id."""
        raise NotImplementedError

    def list_changed(self) -> contextlib.AbstractAsyncContextManager[Callable[[], Awaitable[None]]]:
        """Follow tools list changes; the block gets a function that returns at the next
        notifications/tools/list_changed (and fails after TIMEOUT)."""
        raise NotImplementedError

    async def post_to_ended_session(self) -> int | None:
        """After the client has closed: the HTTP status of a ping sent to its session; None where the client
        cannot name its session (a WebSocket's session is the socket; the stdio wrapper's is its own)."""
        return None


class SdkClient(TableClient):
    """Any transport the official SDK's Client drives."""

    mode: ClassVar[str]

    def transport_for(self) -> Any:
        raise NotImplementedError

    async def __aenter__(self) -> SdkClient:
        self.notifications: list[dict[str, Any]] = []
        self.heard = asyncio.Event()
        self.client = Client(
            tapped(self.transport_for(), self.wire),
            mode=self.mode,
            elicitation_callback=self.answers.elicit,
            sampling_callback=self.answers.sample,
            message_handler=self._on_message,
            cache=None,  # every list goes to the gateway
            read_timeout_seconds=TIMEOUT,
        )
        async with asyncio.timeout(TIMEOUT):
            await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.client.__aexit__(None, None, None)
            if self.http is not None:
                await self.http.aclose()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            return
        root = getattr(message, "root", message)
        if isinstance(root, types.Notification) or getattr(root, "method", None):
            self.notifications.append({"method": root.method})
            self.heard.set()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request = RawRequest(method=method, params=params)
        try:
            async with asyncio.timeout(TIMEOUT):
                return {"result": await self.client.session.send_request(request, ANY_RESULT)}
        except MCPError as exc:
            return {"error": as_json(exc.error)}

    async def list_page(self, method: str, cursor: str | None) -> dict[str, Any]:
        lists = {"tools/list": self.client.list_tools, "prompts/list": self.client.list_prompts}
        async with asyncio.timeout(TIMEOUT):
            return as_json(await lists[method](cursor=cursor))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], on_progress: OnProgress | None = None
    ) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            return as_json(await self.client.call_tool(name, arguments, progress_callback=on_progress))

    async def cancel_call(self, name: str, arguments: dict[str, Any], started: Callable[[], Awaitable[None]]) -> Any:
        progressed = asyncio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            progressed.set()

        call = asyncio.ensure_future(self.client.call_tool(name, arguments, progress_callback=on_progress))
        try:
            async with asyncio.timeout(TIMEOUT):
                await progressed.wait()
                await started()
        finally:
            call.cancel()  # the SDK abandons the request: notifications/cancelled, or (2026-07-28 HTTP) closes it
            with contextlib.suppress(asyncio.CancelledError):
                await call
        [request_id] = [
            message["id"]
            for direction, message in self.wire
            if direction == "out"
            and message.get("method") == "tools/call"
            and message["params"]["name"] == name
            and not any(
                m.get("id") == message["id"] and "method" not in m for d, m in self.wire if d == "in"
            )  # (an id answered earlier may have been minted again)
        ]
        return request_id

    @contextlib.asynccontextmanager
    async def list_changed(self) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        seen = len(self.notifications)

        async def wait() -> None:
            async with asyncio.timeout(TIMEOUT):
                while not any(n["method"] == "notifications/tools/list_changed" for n in self.notifications[seen:]):
                    self.heard.clear()
                    await self.heard.wait()

        yield wait


class StatelessSdkClient(SdkClient):
    """The SDK pinned to 2026-07-28: no handshake; list changes come on a subscriptions/listen stream."""

    mode = MODERN
    era = "stateless"

    @contextlib.asynccontextmanager
    async def list_changed(self) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        async with asyncio.timeout(TIMEOUT):
            listening = self.client.listen(tools_list_changed=True)
            subscription = await listening.__aenter__()  # (waits for the acknowledgement)
        events = aiter(subscription)

        async def wait() -> None:
            async with asyncio.timeout(TIMEOUT):
                event = await anext(events)
            assert type(event).__name__ == "ToolsListChanged", event

        try:
            yield wait
        finally:
            async with asyncio.timeout(TIMEOUT):
                await listening.__aexit__(None, None, None)


def _http(gateway: LiveGateway, **options: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30, **options)


PING = {"jsonrpc": "2.0", "id": "after-close", "method": "ping"}


def _streamable_http(client: SdkClient) -> Any:
    """The SDK's Streamable HTTP transport to /mcp, remembering the session id the gateway gives (if any)."""

    async def remember_session(response: httpx2.Response) -> None:
        client.session_id = client.session_id or response.headers.get("mcp-session-id")

    client.http = _http(client.gateway, event_hooks={"response": [remember_session]})
    return streamable_http_client(client.gateway.mcp_url(), http_client=client.http)


def _stdio_wrapper(client: SdkClient) -> Any:
    """The SDK's stdio transport launching the wrapper (`scripts/mcp-gateway-stdio --url .../mcp`)."""
    return stdio_client(wrapper(client.gateway, "script", None))


class HttpSession(SdkClient):
    transport = "http-2025-11-25"
    mode = "legacy"
    era = "session"
    transport_for = _streamable_http

    async def post_to_ended_session(self) -> int | None:
        assert self.session_id
        headers = {"Mcp-Session-Id": self.session_id, "Accept": "application/json, text/event-stream"}
        async with _http(self.gateway) as http, asyncio.timeout(TIMEOUT):
            return (await http.post(self.gateway.mcp_url(), json=PING, headers=headers)).status_code


class HttpStateless(StatelessSdkClient):
    transport = "http-2026-07-28"
    transport_for = _streamable_http


class Sse(SdkClient):
    transport = "sse"
    mode = "legacy"
    era = "session"

    def transport_for(self) -> Any:
        def remember_session(session_id: str) -> None:
            self.session_id = session_id

        headers = {"Authorization": f"Bearer {self.gateway.token}"}
        return sse_client(self.gateway.url + "/sse", headers=headers, on_session_created=remember_session)

    async def post_to_ended_session(self) -> int | None:
        assert self.session_id
        url = f"{self.gateway.url}/message?session_id={self.session_id}"
        async with _http(self.gateway) as http, asyncio.timeout(TIMEOUT):
            return (await http.post(url, json=PING)).status_code


class WebSocket(SdkClient):
    transport = "websocket"
    mode = "legacy"
    era = "session"

    def transport_for(self) -> Any:
        url = self.gateway.url.replace("http://", "ws://") + "/ws"
        return websocket_transport(url, {"Authorization": f"Bearer {self.gateway.token}"})


class StdioSession(SdkClient):
    transport = "stdio-2025-11-25"
    mode = "legacy"
    era = "session"
    transport_for = _stdio_wrapper


class StdioStateless(StatelessSdkClient):
    transport = "stdio-2026-07-28"
    transport_for = _stdio_wrapper


class Rpc(TableClient):
    """POST /rpc: one JSON-RPC request per HTTP request, one JSON answer, no session."""

    transport = "rpc"
    era = "one-shot"

    async def __aenter__(self) -> Rpc:
        self.rpc = _http(self.gateway)
        self.ids = itertools.count(1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rpc.aclose()

    async def post(self, message: dict[str, Any]) -> httpx2.Response:
        self.wire.append(("out", message))
        async with asyncio.timeout(TIMEOUT):
            response = await self.rpc.post(self.gateway.url + "/rpc", json=message)
        if response.content:
            self.wire.append(("in", response.json()))
        return response

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, **({"params": params} if params else {})}
        response = await self.post(message)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["id"] == message["id"], answer
        return {key: answer[key] for key in ("result", "error") if key in answer}

    async def list_page(self, method: str, cursor: str | None) -> dict[str, Any]:
        answer = await self.request(method, {"cursor": cursor} if cursor else None)
        return answer["result"]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], on_progress: OnProgress | None = None
    ) -> dict[str, Any]:
        answer = await self.request("tools/call", {"name": name, "arguments": arguments})
        if "error" in answer:
            raise MCPError(
                code=answer["error"]["code"], message=answer["error"]["message"], data=answer["error"].get("data")
            )
        return answer["result"]

    async def cancel_call(self, name: str, arguments: dict[str, Any], started: Callable[[], Awaitable[None]]) -> Any:
        """The only cancellation a one-shot request has: the client closes the connection."""
        request_id = next(self.ids)
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        call = asyncio.ensure_future(self.post(message))
        try:
            async with asyncio.timeout(TIMEOUT):
                await started()
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
        return request_id


TRANSPORTS: list[type[TableClient]] = [HttpSession, HttpStateless, Sse, WebSocket, StdioSession, StdioStateless, Rpc]
