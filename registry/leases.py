"""Leases on a gateway's periodic work (docs/federation.md "Where it runs").

A lease is two columns of the gateway's row (``lease_owner``, ``lease_until``) taken with one
conditional UPDATE, so the database decides who wins: two workers, threads, processes or replicas
never run one gateway's check or sync at once, and a crashed worker's lease simply runs out.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from registry.models import Gateway

OWNER_MAX = 64  # Gateway.lease_owner's length


def gateway_lease_acquire(*, gateway_id: int, owner: str, seconds: float) -> bool:
    """Take the gateway's lease for ``seconds`` if it is free, expired or already ``owner``'s; True if taken."""
    now = timezone.now()
    owner = owner[:OWNER_MAX]
    free = Q(lease_owner="") | Q(lease_until__isnull=True) | Q(lease_until__lte=now) | Q(lease_owner=owner)
    taken = (
        Gateway.objects.filter(pk=gateway_id)
        .filter(free)
        .update(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
    )
    return taken == 1


def gateway_lease_release(*, gateway_id: int, owner: str) -> None:
    """Give the lease back, if ``owner`` still holds it (an expired lease another worker took stays theirs)."""
    Gateway.objects.filter(pk=gateway_id, lease_owner=owner[:OWNER_MAX]).update(lease_owner="", lease_until=None)
