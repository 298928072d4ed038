"""A thin adapter for the MCP conformance harness's client scenarios, driving our Streamable HTTP client.

    conformance client --scenario sse-retry --command ".venv/bin/python tests/transports/upstream/conformance_client.py"

The harness appends the server URL as the last argument and names the scenario in
MCP_CONFORMANCE_SCENARIO (and, for some scenarios, the calls to make in MCP_CONFORMANCE_CONTEXT).
`test_conformance.py` runs it (see docs/upstream-clients.md).

Scenarios without a branch of their own get the generic exercise: list and call the tools (all at once,
so input_required rounds of different calls run side by side), list and read the resources, list and get
the prompts, answering elicitation, sampling and roots requests as a cooperative user would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from transports.protocol.upstream import UpstreamClient, UpstreamConfig, UpstreamError, create_client

logger = logging.getLogger("conformance_client")


async def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    """What a cooperative user answers: accept elicitations with the schema's defaults (or a boolean
    True), sample a fixed text, list no roots."""
    method = message.get("method")
    if method == "elicitation/create":
        schema = message.get("params", {}).get("requestedSchema", {})
        content: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            if "default" in prop:
                content[name] = prop["default"]
            elif prop.get("type") == "boolean":
                content[name] = True
            elif prop.get("type") == "string":
                content[name] = "conformance"
        return {"result": {"action": "accept", "content": content}}
    if method == "sampling/createMessage":
        text = {"type": "text", "text": "conformance answer"}
        return {"result": {"role": "assistant", "content": text, "model": "conformance", "stopReason": "endTurn"}}
    if method == "roots/list":
        return {"result": {"roots": []}}
    return None


async def quietly(call: Any) -> Any:
    try:
        return await call
    except UpstreamError as exc:  # some scenarios answer errors on purpose
        logger.info("error answer: %s", exc)
        return None


async def exercise(client: UpstreamClient, context: dict[str, Any]) -> None:
    capabilities = client.server_capabilities
    calls = context.get("toolCalls")
    if "tools" in capabilities or calls:
        listed = await quietly(client.request("tools/list"))
        if calls is None:
            calls = [{"name": tool["name"], "arguments": {}} for tool in (listed or {}).get("tools", [])]
        await asyncio.gather(*(quietly(client.request("tools/call", dict(call), on_message=answer)) for call in calls))
    if "resources" in capabilities:
        resources = await quietly(client.request("resources/list"))
        for resource in (resources or {}).get("resources", [])[:5]:
            await quietly(client.request("resources/read", {"uri": resource["uri"]}, on_message=answer))
    if "prompts" in capabilities:
        prompts = await quietly(client.request("prompts/list"))
        for prompt in (prompts or {}).get("prompts", [])[:5]:
            arguments = {arg["name"]: "x" for arg in prompt.get("arguments") or []}
            params = {"name": prompt["name"], "arguments": arguments}
            await quietly(client.request("prompts/get", params, on_message=answer))


async def main(url: str, scenario: str) -> None:
    config = UpstreamConfig(
        name="conformance",
        transport="streamable-http",
        url=url,
        connect_timeout=10.0,
        client_capabilities={"elicitation": {"form": {}}, "sampling": {}},
    )
    client = create_client(config)
    try:
        await client.connect()
        if scenario == "tools_call":
            tools = await client.request("tools/list")
            names = {tool["name"] for tool in tools["tools"]}
            if "add_numbers" in names:
                await client.request("tools/call", {"name": "add_numbers", "arguments": {"a": 5, "b": 3}})
        elif scenario == "sse-retry":
            # The tool's POST stream is closed after a priming event with `retry:`; the client must wait that
            # long and resume with GET + Last-Event-ID to get the result.
            await client.request("tools/list")
            await client.request("tools/call", {"name": "test_reconnection", "arguments": {}})
        elif scenario == "elicitation-sep1034-client-defaults":
            # The server's elicitation/create arrives on the POST stream and is answered through on_message,
            # as the gateway would after asking its own client; here the schema defaults are the answer.
            async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
                if message.get("method") != "elicitation/create":
                    return None
                schema = message["params"].get("requestedSchema", {})
                content = {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}
                return {"result": {"action": "accept", "content": content}}

            await client.request(
                "tools/call", {"name": "test_client_elicitation_defaults", "arguments": {}}, on_message=on_message
            )
        elif scenario == "initialize":
            await asyncio.sleep(0.5)
        elif scenario == "json-schema-2020-12-preservation":
            # The tool's inputSchema is sent back as it was listed: nothing on the way may change it.
            tools = await client.request("tools/list")
            focal = next(tool for tool in tools["tools"] if tool["name"] == "json_schema_2020_12_tool")
            await client.request(
                "tools/call", {"name": "json_schema_echo", "arguments": {"schema": focal["inputSchema"]}}
            )
        else:
            await exercise(client, json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}"))
    finally:
        await client.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[-1], os.environ.get("MCP_CONFORMANCE_SCENARIO", "")))
