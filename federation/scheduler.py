"""Where federation's periodic and on-demand work runs (docs/federation.md "Where it runs").

Stub: ``enqueue`` runs the job inline. The scheduler work replaces it with Celery (production) or the
in-process scheduler (embedded default).
"""

from __future__ import annotations

from typing import Any


def enqueue(job: str, gateway_id: int, **options: Any) -> None:
    """Run ``job`` ("check" or "sync") for the gateway soon, off the caller's request."""
    from federation import health, sync
    from registry.models import Gateway

    gateway = Gateway.objects.filter(pk=gateway_id).first()
    if gateway is None:
        return
    if job == "check":
        health.gateway_check(gateway=gateway)
    elif job == "sync":
        sync.gateway_sync(gateway=gateway, **options)
