"""ASGI routes of the MCP endpoints, mounted by gateway_project.asgi ahead of Django."""

from typing import Any

from django.urls import path

from transports.streamable_http import endpoint

http_urlpatterns: list[Any] = [
    path("mcp", endpoint),  # type: ignore[arg-type]
    path("mcp/", endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/mcp", endpoint),  # type: ignore[arg-type]
    path("servers/<slug:server>/mcp/", endpoint),  # type: ignore[arg-type]
]
websocket_urlpatterns: list[Any] = []
