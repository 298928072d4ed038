"""Shared by the sync + drift tests: a stand-in for the health state machine while
``registry.gateway_state`` is still a stub in this branch (the real one is used once it exists), and
the lists of a fake upstream."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from registry import gateway_state
from registry.models import Gateway


def _record(*, gateway_id: int, ok: bool, error: str = "", now: Any = None) -> tuple[str, str]:
    now = now or timezone.now()
    gateway = Gateway.objects.get(pk=gateway_id)
    previous = gateway.health
    if ok:
        gateway.health, gateway.consecutive_failures, gateway.last_error = "healthy", 0, ""
        gateway.last_seen_at, gateway.next_check_at = now, None
    else:
        gateway.consecutive_failures += 1
        gateway.health = "unreachable" if gateway.consecutive_failures >= 3 else "degraded"
        gateway.last_error = error
    gateway.last_checked_at = now
    gateway.save()
    return previous, gateway.health


@pytest.fixture
def health_record(monkeypatch):
    """registry.gateway_state.gateway_check_record, or a minimal one while that module is a stub."""
    if not hasattr(gateway_state, "gateway_check_record"):
        monkeypatch.setattr(gateway_state, "gateway_check_record", _record, raising=False)


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object", "properties": {}}, **extra}
