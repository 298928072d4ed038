"""The supervised stdio servers' state, as the serving processes report it (docs/federation.md)."""

from __future__ import annotations

from typing import Any


async def record_process_state(gateway_name: str, state: dict[str, Any]) -> None:
    """hooks.upstream_process_changed receiver: keep the last report on the gateway (stub)."""
