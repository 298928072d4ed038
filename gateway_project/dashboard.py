"""The dashboard on the admin's index page: the upstream gateways with their health, era, last sync and
last error, and the traffic of the last hour (open sessions and streams, calls per minute and error rate
per tool and per gateway, failing ones first, linked to their pages), refreshed by HTMX without reloading
the page (and rendered in full without JavaScript). It composes the registry's data and the transports'
traffic counts (``transports.stats``), so it lives in the top layer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.timesince import timesince

from registry.choices import Health
from registry.models import Gateway, Tool
from transports import stats
from transports.protocol import observe

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
    summary = ", ".join(f"{count} {label.lower()}" for label, count in counts.items() if count) or "none"
    return {"gateways": gateways, "counts": counts, "summary": summary, "refresh": REFRESH_SECONDS}


@staff_member_required
def gateway_health_fragment(request: HttpRequest) -> HttpResponse:
    """The panel alone, for the dashboard's periodic refresh (staff who may view gateways, like the admin)."""
    if not request.user.has_perm("registry.view_gateway"):
        raise PermissionDenied
    return render(request, "admin/_gateway_health.html", gateway_health())


# Tool rows shown (failing ones sort first, so they are always among them).
TRAFFIC_TOOL_ROWS = 50


def _percent(rate: float | None) -> float | None:
    return None if rate is None else rate * 100.0


def _row(row: stats.Row, tool_pks: dict[str, int], gateway_pks: dict[str, int]) -> dict[str, Any]:
    """One table row as the template shows it: names, links, rates."""
    gateway_pk = gateway_pks.get(row.gateway)
    shown: dict[str, Any] = {
        "failing": row.failing,
        "gateway": row.gateway,
        "gateway_url": reverse("admin:registry_gateway_change", args=[gateway_pk]) if gateway_pk else None,
        "per_minute_recent": row.per_minute_recent,
        "per_minute_hour": row.per_minute_hour,
        "calls_recent": row.recent.calls,
        "calls_hour": row.hour.calls,
        "errors_recent": row.recent.errors,
        "errors_hour": row.hour.errors,
        "error_percent_recent": _percent(row.recent.error_rate),
        "error_percent_hour": _percent(row.hour.error_rate),
        "mean_ms": row.hour.mean_ms,
    }
    if row.tool is None:  # a gateway's row: its page, and its tools in the change list
        shown["tools_url"] = (
            reverse("admin:registry_tool_changelist") + f"?gateway__id__exact={gateway_pk}" if gateway_pk else None
        )
        return shown
    tool_pk = tool_pks.get(row.tool)
    shown["tool"] = row.tool
    shown["tool_url"] = reverse("admin:registry_tool_change", args=[tool_pk]) if tool_pk else None
    shown["unknown"] = row.tool == observe.UNKNOWN_TOOL
    shown["other"] = row.tool == observe.OTHER
    return shown


def traffic() -> dict[str, Any]:
    """The traffic panel's data: gauges and per-tool and per-gateway rows summed over every live replica
    (``transports.stats.collect``); two queries to link the rows to their admin pages."""
    data = stats.collect()
    tool_rows = data.tools[:TRAFFIC_TOOL_ROWS]
    tool_names = [row.tool for row in tool_rows if row.tool not in (None, observe.UNKNOWN_TOOL, observe.OTHER)]
    gateway_names = {row.gateway for row in [*tool_rows, *data.gateways] if row.gateway != observe.LOCAL}
    tool_pks = dict(Tool.objects.filter(name__in=tool_names).values_list("name", "pk")) if tool_names else {}
    gateway_pks = (
        dict(Gateway.objects.filter(name__in=gateway_names).values_list("name", "pk")) if gateway_names else {}
    )
    return {
        "traffic": data,
        # How long the counts go back, when less than the hour: "12 minutes".
        "uptime": "less than a minute"
        if data.covered_seconds < 60
        else timesince(datetime.fromtimestamp(data.started, tz=UTC), datetime.fromtimestamp(data.at, tz=UTC)),
        "tools": [_row(row, tool_pks, gateway_pks) for row in tool_rows],
        "more_tools": len(data.tools) - len(tool_rows),
        "gateways": [_row(row, tool_pks, gateway_pks) for row in data.gateways],
        "failing": sum(1 for row in data.tools if row.failing),
    }


@staff_member_required
def traffic_fragment(request: HttpRequest) -> HttpResponse:
    """The traffic panel alone, for the dashboard's periodic refresh (staff who may view tools)."""
    if not request.user.has_perm("registry.view_tool"):
        raise PermissionDenied
    return render(request, "admin/_traffic.html", traffic())
