"""ASGI routes of the MCP endpoints, mounted by gateway_project.asgi ahead of Django."""

from typing import Any

# Filled by the protocol issue: /mcp, /servers/<slug>/mcp, /sse, /ws ...
http_urlpatterns: list[Any] = []
websocket_urlpatterns: list[Any] = []
