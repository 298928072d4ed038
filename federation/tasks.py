"""Celery tasks of federation (docs/federation.md "Where it runs"): thin callers of the scheduler's
``tick`` and ``run_job`` and of peer discovery. Beat sends ``tick`` and ``discover_peers``
(``CELERY_BEAT_SCHEDULE`` in settings); workers run the per-gateway jobs ``tick`` enqueues."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from federation import scheduler
from registry.choices import SyncTrigger


@shared_task(name="federation.tasks.tick", ignore_result=True)
def tick() -> dict[str, list[int]]:
    """Enqueue the checks and syncs that are due."""
    return scheduler.tick().as_dict()


@shared_task(name="federation.tasks.check_gateway", ignore_result=True)
def check_gateway(gateway_id: int) -> str:
    """Health-check one gateway (skipped while another worker holds its lease)."""
    return scheduler.run_job(scheduler.CHECK, gateway_id)


@shared_task(name="federation.tasks.sync_gateway", ignore_result=True)
def sync_gateway(gateway_id: int, trigger: str = SyncTrigger.SCHEDULE) -> str:
    """Sync one gateway's catalog (skipped while another worker holds its lease)."""
    return scheduler.run_job(scheduler.SYNC, gateway_id, trigger=trigger)


@shared_task(name="federation.tasks.discover_peers", ignore_result=True)
def discover_peers() -> dict[str, Any]:
    """Run peer discovery from GATEWAY_PEERS, approved peers and (if on) mDNS; the summary."""
    from federation.peers import peers_discover

    return {"summary": peers_discover().summary()}
