"""The upstream MCP backend: a tools/call relayed to the upstream server the tool came from."""

from __future__ import annotations

from typing import Any

from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry
from transports.protocol.relay import UpstreamRelay


class UpstreamMcpBackend(ToolBackend):
    """Tools discovered on an upstream MCP server (integration type ``mcp``)."""

    def __init__(self, relay: UpstreamRelay) -> None:
        self.relay = relay

    def available(self, tool: ToolEntry) -> bool:
        return tool.gateway is not None

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        tool = context.tool
        assert tool.gateway is not None
        params = {**context.params, "name": tool.upstream_name, "arguments": arguments}
        return await self.relay.request(
            context.exchange, tool.gateway, "tools/call", params, timeout=context.timeout, tool=tool.upstream_name
        )
