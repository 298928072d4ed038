"""ASGI routes of the MCP endpoints, mounted by gateway_project.asgi ahead of Django."""

from typing import Any

from django.urls import path

from transports import sse, websocket
from transports.streamable_http import endpoint

http_urlpatterns: list[Any] = [
    path("mcp", endpoint),  # type: ignore[arg-type]
    path("mcp/", endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/mcp", endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/mcp/", endpoint),  # type: ignore[arg-type]
    # The legacy HTTP+SSE transport (2024-11-05): the stream, and where its messages are posted.
    path("sse", sse.sse_endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/sse", sse.sse_endpoint),  # type: ignore[arg-type]
    path("message", sse.message_endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/message", sse.message_endpoint),  # type: ignore[arg-type]
]
websocket_urlpatterns: list[Any] = [
    path("ws", websocket.endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/ws", websocket.endpoint),  # type: ignore[arg-type]
]
