"""The dashboard on the admin's index page: the upstream gateways with their health, era, last sync and
last error, refreshed by HTMX without reloading the page (and rendered in full without JavaScript).
It composes the registry's data, so it lives in the top layer and reads through the registry's models."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from registry.choices import Health
from registry.models import Gateway

# How often the open dashboard asks for fresh health (seconds).
REFRESH_SECONDS = 5
FAILING = (Health.DEGRADED, Health.UNREACHABLE)


def gateway_health() -> dict[str, Any]:
    """The panel's data: every gateway (failing ones first) and the count per health state."""
    gateways = list(
        Gateway.objects.order_by("name").only(
            "pk",
            "name",
            "enabled",
            "transport",
            "health",
            "detected_era",
            "last_error",
            "last_synced_at",
            "last_checked_at",
            "health_changed_at",
        )
    )
    gateways.sort(key=lambda g: (g.health not in FAILING, g.name))
    counts = {state.label: sum(1 for g in gateways if g.health == state) for state in Health}
    return {"gateways": gateways, "counts": counts, "refresh": REFRESH_SECONDS}


@staff_member_required
def gateway_health_fragment(request: HttpRequest) -> HttpResponse:
    """The panel alone, for the dashboard's periodic refresh (staff who may view gateways, like the admin)."""
    if not request.user.has_perm("registry.view_gateway"):
        raise PermissionDenied
    return render(request, "admin/_gateway_health.html", gateway_health())
