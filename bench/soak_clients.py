"""The soak's clients (bench/soak.py): one kind per transport, each opening a session, using it for a few
operations and closing it, over and over until told to stop; and the long-lived clients that hold a
stream for the whole run.

Every operation's answer is checked (an echo must come back with the text sent, a list must list, a
server-to-client request must be answered and the call then complete); anything else counts as an error
of its transport, with a few examples kept. A session opens its own TCP connection, so connections churn
as sessions do.

Kinds (the weights of their operations are in each class):

- ``http-legacy``: Streamable HTTP in the session era (2025-11-25, 2025-06-18 or 2025-03-26): initialize,
  sometimes a GET stream, calls (some with progress, some answering an elicitation, some giving up on one
  with notifications/cancelled), resource subscriptions; then DELETE, or (``abandon`` of them) going away
  without it, as clients that crash or never send DELETE do;
- ``http-modern``: 2026-07-28, stateless: server/discover, calls, multi-round-trip elicitation (completed,
  or left after the first round), short subscriptions/listen streams;
- ``sse``: the legacy HTTP+SSE transport (2024-11-05): the stream, then messages POSTed to its endpoint;
- ``websocket``: one session per connection, answering elicitations on it too;
- ``rpc``: plain JSON-RPC over HTTP, no session;
- ``stdio-bridge``: ``python -m transports.stdio_bridge`` started for each session, spoken to on its stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
SSE_VERSION = "2024-11-05"
MODERN = "2026-07-28"
OP_TIMEOUT = 30.0
CLIENT_INFO = {"name": "mcp-gateway-soak", "version": "1"}
ELICIT_ANSWER = {"action": "accept", "content": {"username": "soak", "email": "soak@example.com", "name": "Soak"}}
EXAMPLES_KEPT = 8


class Unexpected(Exception):
    """An answer that is not what the operation should get."""


@dataclass
class Tally:
    """What one kind of client did."""

    sessions_opened: int = 0
    sessions_closed: int = 0  # ended by the client: DELETE, closing its stream or socket, exiting
    sessions_abandoned: int = 0  # left without DELETE, for the idle timeout to end
    ops: int = 0
    errors: int = 0
    ops_by_name: Counter[str] = field(default_factory=Counter)
    errors_by_name: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    notifications: int = 0  # notifications received (progress, list changes, resource updates, messages)

    def ok(self, name: str) -> None:
        self.ops += 1
        self.ops_by_name[name] += 1

    def error(self, name: str, exc: BaseException) -> None:
        self.errors += 1
        self.errors_by_name[name] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.examples.append(f"{name}: {text}"[:300])

    def summary(self) -> dict[str, Any]:
        return {
            "sessions_opened": self.sessions_opened,
            "sessions_closed": self.sessions_closed,
            "sessions_abandoned": self.sessions_abandoned,
            "ops": self.ops,
            "errors": self.errors,
            "ops_by_name": dict(sorted(self.ops_by_name.items())),
            "errors_by_name": dict(sorted(self.errors_by_name.items())),
            "error_examples": self.examples,
            "notifications": self.notifications,
        }


@dataclass
class Soak:
    """What every client shares: where the gateway is, the run's random numbers, the stop signal and the tallies."""

    base: str  # http://127.0.0.1:PORT
    token: str
    servers: list[str]  # virtual server names; the first is the one behind an HTTP upstream
    root: str  # the checkout (the stdio bridge runs from it)
    python: str
    think: float  # mean pause between a session's operations, in seconds
    abandon: float  # share of http-legacy sessions left without DELETE
    rng: random.Random
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: new sessions wait (a quiet checkpoint)
    active: int = 0  # sessions of the short-lived clients under way
    tallies: dict[str, Tally] = field(default_factory=dict)
    abandoned_at: list[float] = field(default_factory=list)  # time.monotonic() of each abandoned session
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # What each virtual server calls the fixture's tools and prompts (the second upstream's names get its
    # gateway's prefix, as they clash with the first's), and whether it serves the fixture's resources.
    names: dict[str, dict[str, str]] = field(default_factory=dict)
    has_resources: dict[str, bool] = field(default_factory=dict)

    def tally(self, kind: str) -> Tally:
        return self.tallies.setdefault(kind, Tally())

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def server(self) -> str:
        """The virtual server of a new session: mostly the HTTP upstream's, a quarter the stdio one's."""
        if len(self.servers) > 1 and self.rng.random() < 0.25:
            return self.rng.choice(self.servers[1:])
        return self.servers[0]

    def url(self, server: str, endpoint: str) -> str:
        return f"{self.base}/servers/{server}/{endpoint}"

    def name(self, server: str, original: str) -> str:
        """The name ``server`` serves the fixture's tool or prompt ``original`` under."""
        return self.names.get(server, {}).get(original, original)

    def ops(self, server: str, table: dict[str, int]) -> dict[str, int]:
        """``table`` without what ``server`` cannot do: resource operations where it has no resources, and
        session-era elicitations unless its upstream is the HTTP one. On a stdio upstream shared by
        concurrent calls, a server-to-client request cannot be told apart (nothing on the wire names the
        call it is for: docs/upstream-clients.md, "Which call a message belongs to"), so the gateway
        refuses it and the call fails; that is a documented limit, not what a soak looks for."""
        dropped = set()
        if not self.has_resources.get(server, True):
            dropped |= {"resources/read", "subscribe"}
        if server != self.servers[0]:
            dropped |= {"elicitation", "elicitation-cancelled"}
        return {k: v for k, v in table.items() if k not in dropped}

    async def think_time(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, 2 * self.think))

    async def proceed(self) -> bool:
        """Before a short-lived client's next session: wait while the run is paused; False once it stops."""
        await self.go.wait()
        return not self.stop.is_set()

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """A session under way (a quiet checkpoint waits until none is)."""
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    def finish(self) -> None:
        """The run stops: every client closes what it holds and returns."""
        self.stop.set()
        self.go.set()

    def next_id(self) -> int:
        return next(self.ids)


def http_session() -> aiohttp.ClientSession:
    """One connection per session: sessions churn their TCP connections as real clients do."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=4, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )


async def sse_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str | None, str]]:
    """(event, data) of each SSE event; comments and the priming event (no data) are skipped."""
    event: str | None = None
    data: list[str] = []
    async for raw in content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data and any(data):
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def check_result(message: Any, request_id: Any) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("id") != request_id:
        raise Unexpected(f"not the answer to {request_id!r}: {str(message)[:200]}")
    if "error" in message:
        raise Unexpected(f"JSON-RPC error {message['error']}"[:300])
    result = message.get("result")
    if not isinstance(result, dict):
        raise Unexpected(f"no result object: {str(message)[:200]}")
    return result


def check_echo(result: dict[str, Any], text: str) -> None:
    content = result.get("content") or [{}]
    if result.get("isError") or content[0].get("text") != text:
        raise Unexpected(f"echo of {text!r} came back as {str(result)[:200]}")


def client_answer(request: dict[str, Any]) -> dict[str, Any]:
    """What the client answers to a server-to-client request."""
    method = request.get("method")
    if method == "elicitation/create":
        result: dict[str, Any] = ELICIT_ANSWER
    elif method == "roots/list":
        result = {"roots": [{"uri": "file:///tmp/soak", "name": "soak"}]}
    elif method == "sampling/createMessage":
        result = {"role": "assistant", "content": {"type": "text", "text": "Paris"}, "model": "soak"}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32601, "message": "not here"}}
    return {"jsonrpc": "2.0", "id": request.get("id"), "result": result}


Request = Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any]]]


async def common_op(soak: Soak, server: str, request: Request, name: str) -> bool:
    """The operations every session-carrying client does alike (False for a name that is not one of them)."""
    rng = soak.rng
    if name == "echo":
        text = f"soak-{rng.getrandbits(32):08x}"
        params = {"name": soak.name(server, "echo"), "arguments": {"message": text}}
        check_echo(await request("tools/call", params), text)
    elif name == "tools/list":
        if not (await request("tools/list", None)).get("tools"):
            raise Unexpected("tools/list listed nothing")
    elif name == "progress":
        params = {
            "name": soak.name(server, "test_tool_with_progress"),
            "arguments": {},
            "_meta": {"progressToken": rng.getrandbits(31)},
        }
        if (await request("tools/call", params)).get("isError"):
            raise Unexpected("the progress tool failed")
    elif name == "resources/read":
        if not (await request("resources/read", {"uri": "test://static-text"})).get("contents"):
            raise Unexpected("resources/read read nothing")
    elif name == "prompts/get":
        if not (await request("prompts/get", {"name": soak.name(server, "test_simple_prompt")})).get("messages"):
            raise Unexpected("prompts/get got no messages")
    elif name == "ping":
        await request("ping", None)
    elif name == "elicitation":
        params = {"name": soak.name(server, "test_elicitation"), "arguments": {"message": "who?"}}
        result = await request("tools/call", params)
        if "soak@example.com" not in json.dumps(result):
            raise Unexpected(f"the elicitation's answer did not come back: {str(result)[:200]}")
    else:
        return False
    return True


def weighted(rng: random.Random, table: dict[str, int]) -> str:
    return rng.choices(list(table), weights=list(table.values()))[0]


async def run_ops(soak: Soak, kind: str, table: dict[str, int], op: Callable[[str], Awaitable[None]]) -> None:
    """A session's operations: 1 to 20 of them, drawn from ``table``, until the run stops."""
    tally = soak.tally(kind)
    for _ in range(soak.rng.randint(1, 20)):
        if soak.stop.is_set():
            return
        name = weighted(soak.rng, table)
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                await op(name)
            tally.ok(name)
        except (Exception, TimeoutError) as exc:
            tally.error(name, exc)
        await soak.think_time()


USED_NAMES = (
    "echo",
    "test_tool_with_progress",
    "test_elicitation",
    "test_input_required_result_elicitation",
    "test_simple_prompt",
)


async def learn_names(soak: Soak) -> None:
    """What each virtual server calls the tools and prompts the clients use, and whether it has resources."""
    async with http_session() as http:
        for server in soak.servers:
            listed: dict[str, list[str]] = {}
            for method, key in (("tools/list", "tools"), ("prompts/list", "prompts"), ("resources/list", "resources")):
                body = {"jsonrpc": "2.0", "id": soak.next_id(), "method": method}
                headers = {**soak.auth(), "Content-Type": "application/json"}
                async with http.post(soak.url(server, "rpc"), json=body, headers=headers) as response:
                    result = check_result(json.loads(await response.read()), body["id"])
                listed[key] = [entry.get("name") or entry.get("uri") for entry in result[key]]
            served = listed["tools"] + listed["prompts"]
            soak.names[server] = {}
            for original in USED_NAMES:
                found = sorted((n for n in served if n == original or n.endswith("_" + original)), key=len)
                if not found:
                    raise RuntimeError(f"the virtual server {server} serves no {original!r}: {served}")
                soak.names[server][original] = found[0]
            soak.has_resources[server] = bool(listed["resources"])


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
                try:
                    async with asyncio.timeout(OP_TIMEOUT):
                        await client.open()
                except (Exception, TimeoutError) as exc:
                    tally.error("initialize", exc)
                    await asyncio.sleep(1)
                    continue
                tally.sessions_opened += 1
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
                    try:
                        async with asyncio.timeout(OP_TIMEOUT):
                            await client.open()
                    except (Exception, TimeoutError) as exc:
                        tally.error("initialize", exc)
                        await asyncio.sleep(1)
                        continue
                    tally.sessions_opened += 1
                    await run_ops(soak, kind.KIND, soak.ops(client.server, client.OPS), client.op)
                finally:
                    await client.close()
                tally.sessions_closed += 1
            await soak.think_time()


# -- /rpc -------------------------------------------------------------------------------------------


class RpcSession:
    """JSON-RPC over plain HTTP (`/rpc`): a request, a JSON answer; no session on the gateway's side."""

    KIND = "rpc"
    OPS = {"echo": 50, "tools/list": 15, "resources/read": 15, "ping": 10, "notification": 5}

    def __init__(self, soak: Soak, http: aiohttp.ClientSession, server: str) -> None:
        self.soak, self.http, self.server, self.url = soak, http, server, soak.url(server, "rpc")
        self.headers = {**soak.auth(), "Content-Type": "application/json"}

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        async with self.http.post(self.url, json=body, headers=self.headers) as response:
            if response.status != 200:
                raise Unexpected(f"{method}: HTTP {response.status}: {(await response.read())[:200]!r}")
            return check_result(json.loads(await response.read()), request_id)

    async def op(self, name: str) -> None:
        if await common_op(self.soak, self.server, self.request, name):
            return
        if name == "notification":  # answered with 204 and nothing
            message = {"jsonrpc": "2.0", "method": "ping"}
            async with self.http.post(self.url, json=message, headers=self.headers) as response:
                await response.read()
                if response.status != 204:
                    raise Unexpected(f"a notification got HTTP {response.status}, not 204")


async def rpc_client(soak: Soak) -> None:
    tally = soak.tally(RpcSession.KIND)
    while await soak.proceed():
        async with soak.busy(), http_session() as http:
            client = RpcSession(soak, http, soak.server())
            tally.sessions_opened += 1
            await run_ops(soak, RpcSession.KIND, soak.ops(client.server, RpcSession.OPS), client.op)
            tally.sessions_closed += 1
            await soak.think_time()


async def trigger_changes(soak: Soak, every: float) -> None:
    """Every ``every`` seconds the upstream's tool list changes (test_trigger_tool_change, through /rpc),
    so list_changed notifications fan out to every open stream and the catalog is rebuilt."""
    tally = soak.tally("rpc")
    async with http_session() as http:
        headers = {**soak.auth(), "Content-Type": "application/json"}
        while not soak.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await soak.stop.wait()
            if soak.stop.is_set():
                return
            if not soak.go.is_set():  # a quiet checkpoint
                continue
            body = {
                "jsonrpc": "2.0",
                "id": soak.next_id(),
                "method": "tools/call",
                "params": {"name": "test_trigger_tool_change", "arguments": {}},
            }
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    async with http.post(soak.url(soak.servers[0], "rpc"), json=body, headers=headers) as r:
                        check_result(json.loads(await r.read()), body["id"])
                tally.ok("trigger-tool-change")
            except (Exception, TimeoutError) as exc:
                tally.error("trigger-tool-change", exc)


# -- the stdio bridge -------------------------------------------------------------------------------


class BridgeSession:
    """One run of the stdio bridge: requests on its stdin, answers on its stdout."""

    def __init__(self, soak: Soak, process: asyncio.subprocess.Process, server: str) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.soak, self.process, self.stdin, self.stdout = soak, process, process.stdin, process.stdout
        self.server = server
        self.tally = soak.tally("stdio-bridge")

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        request_id = self.soak.next_id()
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        self.stdin.write(json.dumps(message).encode() + b"\n")
        await self.stdin.drain()
        while True:
            line = await self.stdout.readline()
            if not line:
                raise Unexpected(f"{method}: the bridge's stdout ended")
            incoming = json.loads(line)
            if "method" not in incoming:
                return check_result(incoming, request_id)
            self.tally.notifications += 1

    async def open(self) -> None:
        version = self.soak.rng.choice(LEGACY_VERSIONS)
        await self.request("initialize", {"protocolVersion": version, "capabilities": {}, "clientInfo": CLIENT_INFO})
        self.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        await self.stdin.drain()

    async def op(self, name: str) -> None:
        await common_op(self.soak, self.server, self.request, name)

    async def close(self) -> None:
        """stdin ends: the bridge must DELETE its session and exit by itself."""
        self.stdin.close()
        async with asyncio.timeout(15):
            code = await self.process.wait()
        if code != 0:
            raise Unexpected(f"the bridge exited with {code}")


async def bridge_client(soak: Soak) -> None:
    """`python -m transports.stdio_bridge` started for each session, spoken to on its stdin and stdout."""
    kind = "stdio-bridge"
    tally = soak.tally(kind)
    env = {**os.environ, "MCP_GATEWAY_TOKEN": soak.token, "PYTHONPATH": soak.root}
    while await soak.proceed():
        async with soak.busy():
            server = soak.server()
            process = await asyncio.create_subprocess_exec(
                soak.python,
                "-m",
                "transports.stdio_bridge",
                "--url",
                soak.url(server, "mcp"),
                cwd=soak.root,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            bridge = BridgeSession(soak, process, server)
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    await bridge.open()
                tally.sessions_opened += 1
                await run_ops(soak, kind, {"echo": 6, "tools/list": 1, "progress": 1, "ping": 1}, bridge.op)
                await bridge.close()
                tally.sessions_closed += 1
            except (Exception, TimeoutError) as exc:
                tally.error("session", exc)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await soak.think_time()


# -- long-lived clients ------------------------------------------------------------------------------


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
