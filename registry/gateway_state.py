"""The health state machine of upstream gateways (docs/federation.md, section 1).

What federation learns from probing an upstream (or from a failed call) becomes the gateway's
``health``: unknown → healthy | degraded → unreachable. The snapshot serves ``health`` (the relay fails
fast on unreachable gateways), so a write bumps the catalog version only when the state changes: a
gateway that stays healthy costs the clients nothing.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from registry import events
from registry.choices import Health
from registry.models import Gateway

ERROR_LIMIT = 2000  # characters of last_error kept: a sentence, with room for an upstream's message
_MAX_DOUBLINGS = 32  # beyond this the backoff is the maximum anyway; keeps 2**n a small float


def _backoff(failures: int) -> datetime.timedelta:
    """The wait before the next check of an unreachable gateway: the interval doubling per failure past
    the threshold, at most GATEWAY_HEALTH_MAX_BACKOFF."""
    interval = float(settings.GATEWAY_HEALTH_INTERVAL)
    doublings = min(max(failures - int(settings.GATEWAY_HEALTH_FAILURES), 0), _MAX_DOUBLINGS)
    seconds = min(interval * 2**doublings, float(settings.GATEWAY_HEALTH_MAX_BACKOFF))
    return datetime.timedelta(seconds=seconds)


@transaction.atomic
def gateway_check_record(
    *, gateway_id: int, ok: bool, error: str = "", now: datetime.datetime | None = None
) -> tuple[str, str]:
    """Record one health check's outcome; returns (previous state, new state)."""
    now = now or timezone.now()
    # The row lock makes concurrent recorders (a scheduled check and a failed sync) count one after the
    # other: neither failure is lost. SQLite serialises writers at BEGIN IMMEDIATE instead.
    gateway = Gateway.objects.select_for_update().only("id", "health", "consecutive_failures").get(pk=gateway_id)
    previous = gateway.health
    changes: dict[str, object] = {"last_checked_at": now}
    if ok:
        state = Health.HEALTHY
        changes.update(consecutive_failures=0, last_error="", last_seen_at=now, next_check_at=None)
    else:
        failures = gateway.consecutive_failures + 1
        unreachable = failures >= int(settings.GATEWAY_HEALTH_FAILURES)
        state = Health.UNREACHABLE if unreachable else Health.DEGRADED
        changes.update(
            consecutive_failures=failures,
            last_error=(error or "the health check failed")[:ERROR_LIMIT],
            next_check_at=now + _backoff(failures) if unreachable else None,
        )
    changes["health"] = state
    if state != previous:
        changes["health_changed_at"] = now
    Gateway.objects.filter(pk=gateway_id).update(**changes)
    if state != previous:
        events.catalog_changed()
    return str(previous), str(state)


@transaction.atomic
def gateway_passive_failure(*, name: str, error: str) -> bool:
    """A call to the gateway failed on the connection: a healthy or unknown gateway becomes degraded at
    once; returns whether it changed."""
    now = timezone.now()
    # One conditional UPDATE: a gateway already degraded or unreachable is left to its health checks (so a
    # burst of failed calls writes nothing), and two receivers at once change it once.
    changed = Gateway.objects.filter(name=name, health__in=(Health.HEALTHY, Health.UNKNOWN)).update(
        health=Health.DEGRADED,
        last_error=(error or "a call failed on the connection")[:ERROR_LIMIT],
        consecutive_failures=1,
        health_changed_at=now,
        # Due at once: the scheduler's next tick confirms (or clears) the failure with a real probe.
        next_check_at=now,
    )
    if changed:
        events.catalog_changed()
    return bool(changed)


def gateways_due_for_check(*, now: datetime.datetime | None = None) -> list[int]:
    """Ids of the enabled gateways whose health check is due, the longest unchecked first."""
    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=float(settings.GATEWAY_HEALTH_INTERVAL))
    due = Q(next_check_at__isnull=False, next_check_at__lte=now) | Q(
        Q(last_checked_at__isnull=True) | Q(last_checked_at__lte=stale), next_check_at__isnull=True
    )
    return list(
        Gateway.objects.filter(due, enabled=True)
        .order_by(F("last_checked_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)
    )
