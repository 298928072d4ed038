"""Sync of upstream catalogs into the registry: periodic, on list_changed, on a gateway change (docs/federation.md)."""

from __future__ import annotations

from typing import Any

from federation import services
from registry.choices import SyncTrigger
from registry.models import Gateway


def gateway_sync(*, gateway: Gateway, trigger: str = SyncTrigger.MANUAL, pool: Any = None) -> Any:
    """Read the upstream's catalog and apply the difference (stub: the old refresh)."""
    return services.gateway_refresh(gateway=gateway, pool=pool)


async def after_list_changed(gateway_name: str, pool: Any = None) -> None:
    """hooks.upstream_lists_changed receiver: sync the gateway now."""
    await services.refresh_after_list_changed(gateway_name, pool)


def on_gateway_saved(sender: Any = None, *, gateway_id: int, created: bool = False, **kwargs: Any) -> None:
    """registry.hooks.gateway_saved receiver: sync the gateway soon (stub)."""
