"""Enumerations of the catalog."""

from django.db import models


class Transport(models.TextChoices):
    """How the gateway talks to an upstream MCP server."""

    STREAMABLE_HTTP = "streamable-http", "Streamable HTTP"
    SSE = "sse", "HTTP+SSE (2024-11-05)"
    WEBSOCKET = "websocket", "WebSocket"
    STDIO = "stdio", "stdio (child process)"


class Era(models.TextChoices):
    """Which MCP protocol era the gateway speaks to an upstream."""

    AUTO = "auto", "Detect (2026-07-28 first, else the session era)"
    LEGACY = "legacy", "Session era (initialize handshake, up to 2025-11-25)"
    MODERN = "modern", "2026-07-28 (stateless)"


class DetectedEra(models.TextChoices):
    """The era an upstream was found to speak when the gateway last connected."""

    LEGACY = "legacy", "Session era"
    MODERN = "modern", "2026-07-28 (stateless)"


class AuthType(models.TextChoices):
    """Which credentials the gateway presents to an upstream."""

    NONE = "none", "None"
    BASIC = "basic", "HTTP Basic"
    BEARER = "bearer", "Bearer token"
    HEADERS = "headers", "Custom headers"
    OAUTH_CLIENT = "oauth2-client", "OAuth 2 client credentials (the gateway's own token)"
    OAUTH_USER = "oauth2-user", "OAuth 2 per user (each user connects their account)"


class Health(models.TextChoices):
    """Last known reachability of an upstream (docs/federation.md: the health state machine)."""

    UNKNOWN = "unknown", "Unknown"
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNREACHABLE = "unreachable", "Unreachable"


class SyncTrigger(models.TextChoices):
    """Why a gateway's catalog was read."""

    SCHEDULE = "schedule", "Schedule"
    LIST_CHANGED = "list_changed", "Upstream said list_changed"
    CHANGE = "change", "Gateway added or changed"
    MANUAL = "manual", "By hand"


class ChangeStatus(models.TextChoices):
    """Where a changed upstream definition stands in review."""

    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved"
    SUPERSEDED = "superseded", "Superseded by a newer change"
    ACCEPTED = "accepted", "Taken without review"
    REJECTED = "rejected", "Rejected (the approved definition stays)"


class IntegrationType(models.TextChoices):
    """The backend that answers a tool call."""

    MCP = "mcp", "Upstream MCP server"
    REST = "rest", "REST API"
    CLI = "cli", "Command line"
    FUNCTION = "function", "Python function"


class Scope(models.TextChoices):
    """What a credential allows: read the catalog, change it, call tools."""

    READ = "read", "Read the catalog"
    WRITE = "write", "Change the catalog"
    CALL = "call", "Call tools"
