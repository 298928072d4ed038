"""A thin adapter for the MCP conformance harness's client scenarios, driving our Streamable HTTP client.

    conformance client --scenario sse-retry --command ".venv/bin/python tests/transports/upstream/conformance_client.py"

The harness appends the server URL as the last argument and names the scenario in
MCP_CONFORMANCE_SCENARIO. `test_conformance.py` runs it (see docs/upstream-clients.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from transports.protocol.upstream import UpstreamConfig, create_client


async def main(url: str, scenario: str) -> None:
    config = UpstreamConfig(
        name="conformance",
        transport="streamable-http",
        url=url,
        connect_timeout=10.0,
        client_capabilities={"elicitation": {"form": {}}, "sampling": {}},
    )
    client = create_client(config)
    await client.connect()
    try:
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
        else:
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[-1], os.environ.get("MCP_CONFORMANCE_SCENARIO", "")))
