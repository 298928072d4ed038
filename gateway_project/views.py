"""The landing page at `/`: what this gateway serves and where (its MCP endpoints), with links to the
admin, the API docs and the health probes. Anyone sees the endpoints; a signed-in staff user also sees
the virtual servers and the upstream gateways with their health (read through the registry's selectors)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from registry import selectors
from registry.models import Gateway

TRANSPORTS = (
    ("Streamable HTTP", "mcp", "MCP 2025-11-25 sessions and 2026-07-28 (stateless)"),
    ("HTTP+SSE", "sse", "MCP 2024-11-05 clients"),
    ("WebSocket", "ws", "one connection, both directions"),
    ("JSON-RPC over plain HTTP", "rpc", "one POST per request"),
)


def endpoints(base: str, ws_base: str, prefix: str = "") -> list[dict[str, str]]:
    """The URL of each transport under ``prefix`` ("" for the whole catalog, "/servers/<name>")."""
    return [
        {"name": name, "url": f"{ws_base if path == 'ws' else base}{prefix}/{path}", "note": note}
        for name, path, note in TRANSPORTS
    ]


def home(request: HttpRequest) -> HttpResponse:
    """The landing page."""
    base = request.build_absolute_uri("/").rstrip("/")
    ws_base = "ws" + base.removeprefix("http")
    context: dict[str, Any] = {"base": base, "endpoints": endpoints(base, ws_base), "staff": False}
    user = request.user
    if user.is_authenticated and user.is_staff:
        servers = selectors.server_list_with_counts().filter(enabled=True)
        context |= {
            "staff": True,
            "servers": [
                {"server": server, "url": f"{base}/servers/{server.name}/mcp"} for server in servers.order_by("name")
            ],
            "gateways": Gateway.objects.order_by("name").only(
                "pk", "name", "enabled", "health", "last_error", "last_synced_at", "transport"
            ),
        }
    return render(request, "home.html", context)
