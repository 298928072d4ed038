"""Upstream MCP clients: how the gateway talks to the MCP servers behind it.

Pure asyncio (no Django): Streamable HTTP, legacy HTTP+SSE and WebSocket on aiohttp, stdio on asyncio
subprocesses. `create_client(config)` picks the implementation by `config.transport`; Streamable HTTP and
stdio clients detect the upstream's protocol era (2026-07-28 or the session era) when they connect.
"""

from __future__ import annotations

from transports.protocol.upstream.base import (
    MODERN_TRANSPORTS,
    TRANSPORTS,
    MessageHandler,
    NotificationHandler,
    UpstreamClient,
    UpstreamConfig,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from transports.protocol.vocabulary import ERAS, MODERN
from transports.protocol.vocabulary import LEGACY_VERSIONS as SUPPORTED_PROTOCOL_VERSIONS
from transports.protocol.vocabulary import MODERN_VERSIONS as MODERN_PROTOCOL_VERSIONS


def create_client(config: UpstreamConfig) -> UpstreamClient:
    """A new, unconnected client for the upstream (call `connect()` on it)."""
    if config.era not in ERAS:
        raise ValueError(f"unknown upstream era {config.era!r} (expected one of {', '.join(ERAS)})")
    if config.era == MODERN and config.transport not in MODERN_TRANSPORTS:
        raise ValueError(f"MCP 2026-07-28 has no {config.transport} transport; use era 'auto' or 'legacy'")
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
    "ERAS",
    "MODERN_PROTOCOL_VERSIONS",
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
