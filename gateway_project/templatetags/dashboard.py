"""The dashboard's panels for the admin index template (rendered with the page: no JavaScript needed)."""

from __future__ import annotations

from typing import Any

from django import template

from gateway_project.dashboard import gateway_health, traffic

register = template.Library()


@register.inclusion_tag("admin/_gateway_health.html")
def gateway_health_panel() -> dict[str, Any]:
    return gateway_health()


@register.inclusion_tag("admin/_traffic.html")
def traffic_panel() -> dict[str, Any]:
    return traffic()
