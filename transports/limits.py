"""The Django side of rate and concurrency limits: the process's ``Limiter`` made from settings, with
Redis buckets when REDIS_URL is set (every replica shares them) and in-memory ones otherwise.

``install()`` (called from ``TransportsConfig.ready()``) makes the core build its limiter from the
settings, so every entry (MCP endpoints, the playground, the REST test call, ``manage.py tool_call``) has
the same limits; a changed setting (tests) makes the limiter again on next use.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from registry.validators import parse_rate
from transports.protocol import limits
from transports.protocol.limits import Limiter, MemoryStore, RedisStore

SETTINGS = frozenset(
    {
        limits.USER,
        limits.TOKEN,
        limits.SERVER,
        limits.TOOL,
        limits.GATEWAY,
        "GATEWAY_UPSTREAM_MAX_CONCURRENCY",
        "GATEWAY_UPSTREAM_QUEUE_TIMEOUT",
        "GATEWAY_RATE_LIMIT_REDIS_PREFIX",
        "REDIS_URL",
    }
)


def rate_setting(name: str) -> limits.Rate | None:
    """A rate setting, parsed; ImproperlyConfigured-style ValueError naming the setting when malformed."""
    try:
        return parse_rate(getattr(settings, name, "") or "")
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def build_limiter() -> Limiter:
    """The limits the settings ask for."""
    store: limits.Store = (
        RedisStore(settings.REDIS_URL, prefix=settings.GATEWAY_RATE_LIMIT_REDIS_PREFIX)
        if settings.REDIS_URL
        else MemoryStore()
    )
    return Limiter(
        per_user=rate_setting(limits.USER),
        per_token=rate_setting(limits.TOKEN),
        per_server=rate_setting(limits.SERVER),
        per_tool=rate_setting(limits.TOOL),
        per_gateway=rate_setting(limits.GATEWAY),
        max_concurrency=settings.GATEWAY_UPSTREAM_MAX_CONCURRENCY,
        queue_timeout=settings.GATEWAY_UPSTREAM_QUEUE_TIMEOUT,
        store=store,
    )


def _changed(*, setting: str, **kwargs: Any) -> None:
    if setting in SETTINGS:
        limits.reset()


def install() -> None:
    limits.install(build_limiter)
    setting_changed.connect(_changed, dispatch_uid="transports.limits")
