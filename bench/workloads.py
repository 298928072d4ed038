"""The benchmark's workloads: the MCP operation each cell repeats. Add one by appending an entry to WORKLOADS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import loadgen
from config import (
    MANY_TOOLS,
    MANY_TOOLS_PAGE,
    REST_TOOL,
)


async def op_tools_call_echo(client: loadgen.McpClient) -> None:
    name = client.aliases.get("echo", "echo")
    result = await client.request("tools/call", {"name": name, "arguments": {"message": "hi"}})
    if result.get("isError") or result["content"][0].get("text") != "hi":
        raise loadgen.McpError(f"unexpected echo result {str(result)[:200]}")


def op_tools_list_first(count: int) -> loadgen.Operation:
    """tools/list without a cursor; the page must hold min(count, page size) tools."""
    expected = min(count, MANY_TOOLS_PAGE)

    async def op(client: loadgen.McpClient) -> None:
        result = await client.request("tools/list", {})
        if len(result.get("tools") or ()) != expected:
            raise loadgen.McpError(f"tools/list first page: {len(result.get('tools') or ())} tools, not {expected}")

    return op


def op_tools_walk(count: int) -> loadgen.Operation:
    """Every page of tools/list, following nextCursor; one operation is the whole walk of `count` tools."""

    async def op(client: loadgen.McpClient) -> None:
        seen = 0
        params: dict[str, Any] = {}
        for _ in range(count // 10 + 10):  # a bound, in case a server keeps returning a cursor
            result = await client.request("tools/list", params)
            seen += len(result.get("tools") or ())
            cursor = result.get("nextCursor")
            if not cursor:
                break
            params = {"cursor": cursor}
        if seen != count:
            raise loadgen.McpError(f"tools/list walk: {seen} tools, not {count}")

    return op


async def op_rest_tools_call(client: loadgen.McpClient) -> None:
    """A REST tool (the tests' HTTP API's /echo, the message picked out with JMESPath)."""
    result = await client.request("tools/call", {"name": REST_TOOL, "arguments": {"message": "hi"}})
    if result.get("isError") or (result.get("structuredContent") or {}).get("message") != "hi":
        raise loadgen.McpError(f"unexpected REST tool result {str(result)[:200]}")


async def op_resources_read(client: loadgen.McpClient) -> None:
    result = await client.request("resources/read", {"uri": "test://static-text"})
    if not result.get("contents"):
        raise loadgen.McpError("empty resources/read")


async def op_initialize(client: loadgen.McpClient) -> None:
    await client.open()
    await client.close()


@dataclass
class Workload:
    name: str
    description: str
    operation: loadgen.Operation
    endpoint: str = "up"  # "up": the fixture (gateway server `bench`); b10/b1k/b10k: the bulk upstream of that size
    session_per_op: bool = False  # True: each operation opens (and ends) its own session
    max_concurrency: int | None = None
    kinds: tuple[str, ...] = ("direct", "gateway", "contextforge")  # the target kinds that can run it


WORKLOADS: list[Workload] = [
    Workload("tools_call", 'tools/call echo {"message":"hi"}', op_tools_call_echo),
    Workload(
        "rest_tools_call",
        "tools/call of a REST tool: GET /echo/bench?message=hi on the tests' HTTP API, JMESPath {message: ...}",
        op_rest_tools_call,
        "rest",
        kinds=("gateway",),
    ),
    Workload("tools_list_10", "tools/list, first page of 10 tools (one page)", op_tools_list_first(10), "b10"),
    Workload(
        "tools_list_1k",
        f"tools/list, first page of 1,000 tools ({MANY_TOOLS_PAGE} per page)",
        op_tools_list_first(1_000),
        "b1k",
        max_concurrency=32,
    ),
    Workload(
        "tools_list_10k",
        f"tools/list, first page of {MANY_TOOLS:,} tools ({MANY_TOOLS_PAGE} per page)",
        op_tools_list_first(MANY_TOOLS),
        "b10k",
        max_concurrency=32,
    ),
    Workload(
        "tools_walk_1k",
        f"tools/list full walk of 1,000 tools: every page by nextCursor ({1_000 // MANY_TOOLS_PAGE} requests per op)",
        op_tools_walk(1_000),
        "b1k",
        max_concurrency=32,
    ),
    Workload(
        "tools_walk_10k",
        f"tools/list full walk of {MANY_TOOLS:,} tools ({MANY_TOOLS // MANY_TOOLS_PAGE} requests per op; c=1 only: "
        "one walk through the direct upstream takes about 0.3 s of its CPU)",
        op_tools_walk(MANY_TOOLS),
        "b10k",
        max_concurrency=1,
    ),
    Workload("resources_read", "resources/read test://static-text", op_resources_read),
    Workload(
        "initialize",
        "session setup: initialize + notifications/initialized + DELETE (3 HTTP requests per op)",
        op_initialize,
        session_per_op=True,
    ),
]
