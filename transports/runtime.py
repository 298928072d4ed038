"""The protocol core of this process, built from settings on first use."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from registry import events
from transports.cache import upstream_cache
from transports.catalog_source import DatabaseSource
from transports.protocol.backends import ToolBackends
from transports.protocol.backends.cli import CliBackend
from transports.protocol.backends.function import FunctionBackend
from transports.protocol.backends.rest import RestBackend
from transports.protocol.catalog import CatalogCache
from transports.protocol.core import McpCore
from transports.protocol.replicas import Mesh
from transports.protocol.sessions import SessionStore
from transports.protocol.shared_sessions import RedisSessionStore
from transports.protocol.stdio_supervisor import StdioSupervisor
from transports.protocol.upstream_auth import UpstreamAuth
from transports.protocol.upstream_pool import UpstreamPool

_core: McpCore | None = None


def render_prompt(template: str, declared: list[dict[str, Any]], given: dict[str, str]) -> str:
    """A local prompt's text (the registry's sandboxed Jinja2); ValueError with the client's message."""
    from registry.exceptions import InvalidInput
    from registry.prompts import render

    try:
        return render(template, declared, given)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def wrapped_tool_backends() -> ToolBackends:
    """The REST, CLI and Python-function backends, configured from settings (upstream MCP is the core's own)."""
    return ToolBackends(
        {
            "rest": RestBackend(
                allow_private=settings.GATEWAY_OUTBOUND_ALLOW_PRIVATE,
                max_response_bytes=settings.GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES,
                max_redirects=settings.GATEWAY_OUTBOUND_MAX_REDIRECTS,
                max_connections=settings.GATEWAY_OUTBOUND_MAX_CONNECTIONS,
            ),
            "cli": CliBackend(max_output_bytes=settings.GATEWAY_CLI_MAX_OUTPUT_BYTES),
            "function": FunctionBackend(allowed=settings.GATEWAY_FUNCTION_TOOLS),
        }
    )


class BootingSource(DatabaseSource):
    """The database source; each load also starts the stdio servers marked ``start_at_boot``."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def rows(self) -> dict[str, Any]:
        rows = await super().rows()
        self.pool.start_at_boot(rows.get("gateways", ()))
        return rows


def get_core() -> McpCore:
    """The process-wide McpCore (sessions, catalog snapshot, upstream pool)."""
    global _core
    if _core is None:
        limits: dict[str, Any] = {
            "idle_timeout": settings.GATEWAY_SESSION_IDLE_TIMEOUT,
            "max_sessions": settings.GATEWAY_MAX_SESSIONS,
            "max_per_user": settings.GATEWAY_MAX_SESSIONS_PER_USER,
        }
        store = settings.GATEWAY_SESSION_STORE
        mesh = None
        sessions: SessionStore | RedisSessionStore
        if store == "redis" or (store == "auto" and settings.REDIS_URL):
            from channels.layers import get_channel_layer

            if not settings.REDIS_URL:
                raise ImproperlyConfigured("GATEWAY_SESSION_STORE=redis needs REDIS_URL.")
            mesh = Mesh(get_channel_layer())
            sessions = RedisSessionStore(settings.REDIS_URL, mesh, prefix=f"{settings.GATEWAY_REDIS_PREFIX}:", **limits)
        else:
            sessions = SessionStore(**limits)
        from transports.user_credentials import CACHE_SECONDS, DatabaseVault

        upstreams = UpstreamPool(
            request_timeout=settings.GATEWAY_TOOL_TIMEOUT,
            auth=UpstreamAuth(DatabaseVault(), cache_seconds=CACHE_SECONDS),
            stdio=StdioSupervisor(
                max_processes=settings.GATEWAY_STDIO_MAX_PROCESSES,
                idle_timeout=settings.GATEWAY_STDIO_IDLE_TIMEOUT,
                max_backoff=settings.GATEWAY_STDIO_MAX_BACKOFF,
            ),
        )
        core = McpCore(
            catalog=CatalogCache(BootingSource(upstreams)),
            upstreams=upstreams,
            sessions=sessions,
            mesh=mesh,
            page_size=settings.GATEWAY_MCP_PAGE_SIZE,
            tool_timeout=settings.GATEWAY_TOOL_TIMEOUT,
            request_state_secret=settings.SECRET_KEY.encode(),
            request_state_ttl=settings.GATEWAY_REQUEST_STATE_TTL,
            max_parked_calls=settings.GATEWAY_MAX_PARKED_CALLS,
            cache_ttl_ms=settings.GATEWAY_CACHE_TTL_MS,
            cache_scope="private" if settings.GATEWAY_AUTH_REQUIRED else "public",
            prompt_renderer=render_prompt,
            backends=wrapped_tool_backends(),
            failover={"failures": settings.GATEWAY_CIRCUIT_FAILURES, "cooldown": settings.GATEWAY_CIRCUIT_COOLDOWN},
        )
        core.relay.cache = upstream_cache()  # answers of upstream reads (docs/governance.md, "Caching")
        core.relay.max_notifications = settings.GATEWAY_UPSTREAM_MAX_NOTIFICATIONS
        events.add_local_listener(_invalidate_snapshot)
        _core = core
    return _core


def _invalidate_snapshot() -> None:
    if _core is not None:
        _core.catalog.invalidate()


def current_core() -> McpCore | None:
    """This process's core if it has been made (it serves MCP), else None; never makes one."""
    return _core


def reset_core() -> None:
    """Forget the process's core (tests start each case with a fresh one)."""
    global _core
    _core = None
