"""Project-wide system checks: environment values that could not be parsed, and unsafe modes."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

logger = logging.getLogger(__name__)


@register(Tags.compatibility)
def check_environment(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every environment value that failed to parse is an error naming the variable."""
    return [
        Error(message, hint="Fix the environment variable and start again.", id="gateway.E001")
        for message in getattr(settings, "SETTINGS_ERRORS", [])
    ]


@register(Tags.compatibility)
def check_session_store(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """GATEWAY_SESSION_STORE names a store this process can use."""
    store = getattr(settings, "GATEWAY_SESSION_STORE", "auto")
    if store not in ("auto", "memory", "redis"):
        return [
            Error(
                f"GATEWAY_SESSION_STORE is {store!r}; it must be auto, memory or redis.",
                hint="auto keeps sessions in Redis when REDIS_URL is set, else in memory.",
                id="gateway.E002",
            )
        ]
    if store == "redis" and not getattr(settings, "REDIS_URL", None):
        return [
            Error(
                "GATEWAY_SESSION_STORE is redis but REDIS_URL is not set.",
                hint="Set REDIS_URL (redis://host:6379/0), or use auto or memory.",
                id="gateway.E003",
            )
        ]
    return []


@register(Tags.security)
def check_auth_disabled(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Turning authentication off is allowed but never silent."""
    if getattr(settings, "GATEWAY_AUTH_REQUIRED", True):
        return []
    return [
        Warning(
            "GATEWAY_AUTH_REQUIRED is off: every REST and MCP endpoint is open to anyone who can reach it.",
            hint="Leave it on outside a trusted local machine.",
            id="gateway.W001",
        )
    ]


def warn_at_startup() -> None:
    """Log the unsafe modes once per process, where an operator reading the server log sees them."""
    if not getattr(settings, "GATEWAY_AUTH_REQUIRED", True):
        logger.warning(
            "Authentication is OFF (GATEWAY_AUTH_REQUIRED=false): all endpoints are open to anyone who can reach them."
        )
