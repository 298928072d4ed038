"""A table of the registered gateways."""

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count

from federation.management.output import when
from registry.models import Gateway

COLUMNS = ("NAME", "TRANSPORT", "ENABLED", "HEALTH", "LAST SYNC", "TOOLS", "GROUP")


class Command(BaseCommand):
    help = "List the gateways: name, transport, enabled, health, last sync, tools and redundancy group."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = [
            (
                gateway.name,
                gateway.transport,
                "yes" if gateway.enabled else "no",
                gateway.health,
                when(gateway.last_synced_at),
                str(gateway.tool_count),
                gateway.redundancy_group or "-",
            )
            for gateway in Gateway.objects.annotate(tool_count=Count("tools")).order_by("name")
        ]
        if not rows:
            self.stdout.write("No gateways. Register one with `manage.py gateway_add NAME --url URL`.")
            return
        widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
        for row in [COLUMNS, *rows]:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
