"""Writes of ``Gateway.process_state``: what the serving processes report about their stdio children.

``process_state`` maps an instance ("host:gateway-pid:process", e.g. "web-1:4242:shared" or
"web-1:4242:user alice") to its last reported state. It is not catalog data: no catalog version bump, no
``gateway_saved`` hook (a queryset update, which sends no signals either).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from registry.models import Gateway

MAX_INSTANCES = 100  # per gateway; the oldest stopped ones go first


@transaction.atomic
def gateway_process_state_record(
    *, name: str, state: dict[str, Any], stale: Callable[[dict[str, Any]], bool] | None = None
) -> bool:
    """Keep ``state`` under its ``instance`` on the gateway ``name``, dropping entries ``stale`` says are
    gone; False when there is no such gateway."""
    gateway = Gateway.objects.select_for_update().filter(name=name).only("id", "process_state").first()
    if gateway is None:
        return False
    current = gateway.process_state if isinstance(gateway.process_state, dict) else {}
    kept = {
        key: value
        for key, value in current.items()
        if isinstance(value, dict) and not (stale is not None and stale(value))
    }
    kept[str(state["instance"])] = state
    if len(kept) > MAX_INSTANCES:
        stopped = sorted(
            (key for key, value in kept.items() if value.get("state") == "stopped" and key != state["instance"]),
            key=lambda key: str(kept[key].get("since") or ""),
        )
        for key in stopped[: len(kept) - MAX_INSTANCES]:
            del kept[key]
    Gateway.objects.filter(pk=gateway.pk).update(process_state=kept)
    return True
