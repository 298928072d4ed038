"""The soak's clients (bench/soak.py): one kind per transport, each opening a session, using it for a few
operations and closing it, over and over until told to stop; and the long-lived clients that hold a
stream for the whole run. This module has what they share (the run's state, the tallies, the checks, the
operations every session does alike); each transport's clients have a module of their own.

Every operation's answer is checked (an echo must come back with the text sent, a list must list, a
server-to-client request must be answered and the call then complete); anything else counts as an error
of its transport, with a few examples kept. A session opens its own TCP connection, so connections churn
as sessions do.

Kinds (the weights of their operations are in each class):

- ``http-legacy`` (soak_http.py): Streamable HTTP in the session era (2025-11-25, 2025-06-18 or
  2025-03-26): initialize, sometimes a GET stream, calls (some with progress, some answering an elicitation,
  some giving up on one with notifications/cancelled), resource subscriptions; then DELETE, or (``abandon``
  of them) going away without it, as clients that crash or never send DELETE do;
- ``http-modern`` (soak_http.py): 2026-07-28, stateless: server/discover, calls, multi-round-trip
  elicitation (completed, or left after the first round), short subscriptions/listen streams;
- ``sse`` (soak_connected.py): the legacy HTTP+SSE transport (2024-11-05): the stream, then messages
  POSTed to its endpoint;
- ``websocket`` (soak_connected.py): one session per connection, answering elicitations on it too;
- ``rpc`` (soak_rpc.py): plain JSON-RPC over HTTP, no session;
- ``stdio-bridge`` (soak_bridge.py): ``python -m transports.stdio_bridge`` started for each session,
  spoken to on its stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
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


async def opened(soak: Soak, kind: str, open_session: Callable[[], Awaitable[None]]) -> bool:
    """Whether a short-lived client's session opened within OP_TIMEOUT (counted); a failure is an
    ``initialize`` error, after which the client pauses a second before its next try."""
    tally = soak.tally(kind)
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            await open_session()
    except (Exception, TimeoutError) as exc:
        tally.error("initialize", exc)
        await asyncio.sleep(1)
        return False
    tally.sessions_opened += 1
    return True


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
