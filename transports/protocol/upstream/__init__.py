"""Upstream MCP clients: how the gateway talks to the MCP servers behind it.

Pure asyncio (no Django): Streamable HTTP, legacy HTTP+SSE and WebSocket on aiohttp, stdio on asyncio
subprocesses. `create_client(config)` picks the implementation by `config.transport`.
"""

from __future__ import annotations

from transports.protocol.upstream.base import (
    SUPPORTED_PROTOCOL_VERSIONS,
    TRANSPORTS,
    MessageHandler,
    NotificationHandler,
    UpstreamClient,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


def create_client(config: UpstreamConfig) -> UpstreamClient:
    """A new, unconnected client for the upstream (call `connect()` on it)."""
    if config.transport == "streamable-http":
        from transports.protocol.upstream.streamable_http import StreamableHttpClient

        return StreamableHttpClient(config)
    if config.transport == "sse":
        from transports.protocol.upstream.legacy_sse import LegacySseClient

        return LegacySseClient(config)
    if config.transport == "websocket":
        from transports.protocol.upstream.websocket import WebSocketClient

        return WebSocketClient(config)
    if config.transport == "stdio":
        from transports.protocol.upstream.stdio import StdioClient

        return StdioClient(config)
    raise ValueError(f"unknown upstream transport {config.transport!r} (expected one of {', '.join(TRANSPORTS)})")


__all__ = [
    "SUPPORTED_PROTOCOL_VERSIONS",
    "TRANSPORTS",
    "MessageHandler",
    "NotificationHandler",
    "UpstreamClient",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "create_client",
]
