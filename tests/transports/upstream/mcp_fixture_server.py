"""An upstream MCP server built with the official `mcp` SDK, for the upstream-client tests.

Run: python mcp_fixture_server.py stdio | sse PORT | streamable-http PORT
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections import deque

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

server = MCPServer("fixture", version="1.0.0", instructions="Test upstream for the gateway.")
CANCELLED: list[str] = []
STARTED: list[str] = []


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
async def progress(steps: int, ctx: Context) -> str:
    """Report `steps` progress notifications, then return."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}")
    return f"did {steps} steps"


class Person(BaseModel):
    name: str


@server.tool()
async def ask_name(ctx: Context) -> str:
    """Ask the client for a name (elicitation/create, a server->client request)."""
    answer = await ctx.elicit("What is your name?", schema=Person)
    if answer.action == "accept" and answer.data is not None:
        return f"hello {answer.data.name}"
    return f"no name ({answer.action})"


@server.tool()
async def sample(prompt: str, ctx: Context) -> str:
    """Ask the client's model (sampling/createMessage)."""
    result = await ctx.session.create_message(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=20,
        related_request_id=ctx.request_id,
    )
    content = result.content
    return f"model said: {getattr(content, 'text', content)}"


@server.tool()
async def sleep(seconds: float, ctx: Context) -> str:
    """Sleep; records whether the client cancelled it."""
    STARTED.append(ctx.request_id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED.append(ctx.request_id)
        raise
    return "slept"


@server.tool()
def cancelled() -> dict[str, list[str]]:
    """The request ids of `sleep` calls that were started and that were cancelled."""
    return {"started": list(STARTED), "cancelled": list(CANCELLED)}


@server.tool()
async def log(message: str, ctx: Context) -> str:
    """Send a log notification related to this call, then return."""
    await ctx.info(message)
    return "logged"


@server.tool()
def fail(code: int) -> str:
    """Raise a JSON-RPC error with this code."""
    raise MCPError(code=code, message="requested failure", data={"why": "test"})


@server.tool()
async def poll(steps: int, ctx: Context) -> str:
    """Close the POST's SSE stream mid-call (SSE polling); the client must resume with Last-Event-ID."""
    await ctx.report_progress(0, steps, "before close")
    await ctx.close_sse_stream()
    for i in range(1, steps + 1):
        await asyncio.sleep(0.15)
        await ctx.report_progress(i, steps, f"after close {i}")
    return f"polled {steps}"


@server.tool()
async def announce(ctx: Context) -> str:
    """Send notifications/tools/list_changed on the session (not tied to this call)."""
    await ctx.session.send_tool_list_changed()
    return "announced"


@server.tool()
def die(code: int) -> str:
    """Exit the server process abruptly."""
    os._exit(code)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


class MemoryEventStore(EventStore):
    """Keeps recent events so streams can be resumed with Last-Event-ID."""

    def __init__(self, size: int = 1000) -> None:
        self._events: deque[tuple[str, str, types.JSONRPCMessage | None]] = deque(maxlen=size)
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = f"{stream_id}:{next(self._ids)}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        found = None
        for event_id, stream_id, message in list(self._events):
            if found is None:
                if event_id == last_event_id:
                    found = stream_id
                continue
            if stream_id == found and message is not None:
                await send_callback(EventMessage(message, event_id))
        return found


def main() -> None:
    transport = sys.argv[1]
    if transport == "stdio":
        server.run("stdio")
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run(
            "streamable-http",
            host="127.0.0.1",
            port=int(sys.argv[2]),
            event_store=MemoryEventStore(),
            retry_interval=100,
        )


if __name__ == "__main__":
    main()
