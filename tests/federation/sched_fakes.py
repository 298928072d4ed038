"""Stand-ins for the health and sync helpers' functions while they are stubs in this worktree.

The scheduler calls ``registry.gateway_state.gateways_due_for_check``, ``federation.health.gateway_check``
and ``federation.sync.gateway_sync`` (docs/federation.md). Until those land, the scheduler's tests put these
small versions of the contract in their place, and only in their place: ``install`` leaves every function
that is no longer a stub alone, so after the merge the same tests run the real path. The fakes are real
too, as far as they go: the check reads the upstream (``federation.services.read_upstream``), the sync is
the existing refresh plus a ``SyncRun`` row. They record their calls in ``CALLS``.

Subprocesses (a Celery worker, a gateway) get them through the app ``SchedFakesConfig`` that
``tests/federation/sched_settings.py`` installs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

CALLS: list[tuple[str, int, str]] = []  # (job, gateway id, trigger or "")


def is_stub(func: Any) -> bool:
    return func is None or "(stub" in (getattr(func, "__doc__", "") or "")


def due_for_check(now: datetime | None = None) -> list[int]:
    """The contract's due rule: next_check_at past, else never checked or checked longer ago than the interval."""
    from registry.models import Gateway

    now = now or timezone.now()
    older = now - timedelta(seconds=settings.GATEWAY_HEALTH_INTERVAL)
    due = Q(next_check_at__isnull=False, next_check_at__lte=now) | Q(
        next_check_at__isnull=True, last_checked_at__isnull=True
    )
    due |= Q(next_check_at__isnull=True, last_checked_at__lte=older)
    return list(Gateway.objects.filter(enabled=True).filter(due).values_list("pk", flat=True))


def check(*, gateway: Any, timeout: float | None = None) -> bool:
    """Read the upstream once; record healthy or a failure."""
    from federation import services
    from registry.choices import Health
    from registry.exceptions import InvalidInput
    from registry.models import Gateway

    CALLS.append(("check", gateway.pk, ""))
    now = timezone.now()
    try:
        services.read_upstream(gateway, timeout=timeout or settings.GATEWAY_HEALTH_TIMEOUT)
    except InvalidInput as exc:
        failures = gateway.consecutive_failures + 1
        Gateway.objects.filter(pk=gateway.pk).update(
            health=Health.UNREACHABLE if failures >= settings.GATEWAY_HEALTH_FAILURES else Health.DEGRADED,
            last_error=exc.message,
            consecutive_failures=failures,
            last_checked_at=now,
        )
        return False
    Gateway.objects.filter(pk=gateway.pk).update(
        health=Health.HEALTHY, last_error="", consecutive_failures=0, last_checked_at=now, last_seen_at=now
    )
    return True


def sync(*, gateway: Any, trigger: str = "manual", pool: Any = None, timeout: float | None = None) -> Any:
    """The old refresh, recorded as a SyncRun (failed runs too, then InvalidInput as the contract says)."""
    from federation import services
    from registry.exceptions import InvalidInput
    from registry.models import Gateway, SyncRun

    CALLS.append(("sync", gateway.pk, str(trigger)))
    started = timezone.now()
    try:
        diff = services.gateway_refresh(gateway=gateway, timeout=timeout or settings.GATEWAY_SYNC_TIMEOUT, pool=pool)
    except InvalidInput as exc:
        finished = timezone.now()
        SyncRun.objects.create(
            gateway=gateway, trigger=trigger, started_at=started, finished_at=finished, ok=False, error=exc.message
        )
        raise
    finished = timezone.now()
    Gateway.objects.filter(pk=gateway.pk).update(last_synced_at=finished)
    return SyncRun.objects.create(
        gateway=gateway,
        trigger=trigger,
        started_at=started,
        finished_at=finished,
        duration_ms=int((finished - started).total_seconds() * 1000),
        ok=True,
        added=diff.added,
        updated=diff.updated,
        removed=diff.removed,
        skipped=diff.skipped,
    )


def install(setattr_: Any) -> None:
    """Put the fakes in place of whatever is still a stub (``setattr_``: monkeypatch.setattr or setattr)."""
    from federation import health
    from federation import sync as sync_module
    from registry import gateway_state

    if is_stub(getattr(gateway_state, "gateways_due_for_check", None)):
        setattr_(gateway_state, "gateways_due_for_check", due_for_check, raising=False)
    if is_stub(health.gateway_check):
        setattr_(health, "gateway_check", check)
    if is_stub(sync_module.gateway_sync):
        setattr_(sync_module, "gateway_sync", sync)


def _plain_setattr(target: Any, name: str, value: Any, raising: bool = True) -> None:
    setattr(target, name, value)


class SchedFakesConfig(AppConfig):
    """Installs the fakes in a subprocess (worker, gateway) started with tests/federation/sched_settings.py."""

    name = "tests.federation"
    label = "sched_fakes"

    def ready(self) -> None:
        install(_plain_setattr)
