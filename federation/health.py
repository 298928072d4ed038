"""Health checks of upstream gateways and the passive signals of failed calls (docs/federation.md)."""

from __future__ import annotations

from typing import Any

from registry.models import Gateway


def gateway_check(*, gateway: Gateway, timeout: float | None = None) -> Any:
    """Probe the upstream once and record the result in the health state machine (stub)."""
    raise NotImplementedError


async def after_call_failure(gateway_name: str, error: str) -> None:
    """hooks.upstream_failed receiver: a call failed on the connection (stub)."""
