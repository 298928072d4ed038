"""Everything about one gateway except its secrets."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from federation.management.output import gateways_named, sync_counts, when
from registry.choices import ChangeStatus

SETTINGS = (
    "description",
    "enabled",
    "transport",
    "era",
    "url",
    "command",
    "args",
    "env",
    "cwd",
    "auth_type",
    "verify_tls",
    "sync_interval",
    "redundancy_group",
    "priority",
    "per_user_process",
    "start_at_boot",
)


class Command(BaseCommand):
    help = (
        "Show the gateway NAME: its settings (never its credentials), health, the last 5 sync runs, its process "
        "and how many changed tool definitions wait for review."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", metavar="NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        (gateway,) = gateways_named([options["name"]])
        out = self.stdout.write
        out(f"{gateway.name}")
        for name in SETTINGS:
            value = getattr(gateway, name)
            if name == "sync_interval" and value is None:
                value = "default (GATEWAY_SYNC_INTERVAL)"
            elif isinstance(value, (list, dict)):
                value = json.dumps(value)
            out(f"  {name}: {value}")
        out(f"  credentials stored: {'yes' if gateway.has_credentials else 'no'}")
        if gateway.ca_bundle:
            out("  CA bundle: set")
        out("Health")
        out(f"  state: {gateway.health} (since {when(gateway.health_changed_at, never='-')})")
        out(f"  last error: {gateway.last_error or '-'}")
        out(f"  consecutive failures: {gateway.consecutive_failures}")
        out(f"  last seen: {when(gateway.last_seen_at)}")
        out(f"  last checked: {when(gateway.last_checked_at)}")
        if gateway.next_check_at:
            out(f"  next check: {when(gateway.next_check_at)}")
        out(f"  last synced: {when(gateway.last_synced_at)}")
        if gateway.detected_era or gateway.protocol_version:
            out(f"  protocol: {gateway.protocol_version or '?'} ({gateway.detected_era or 'not detected'} era)")
        out("Last sync runs")
        runs = list(gateway.sync_runs.order_by("-started_at", "-pk")[:5])
        for run in runs:
            result = sync_counts(run) if run.ok else f"failed: {run.error}"
            out(f"  {when(run.started_at)} {run.trigger} ({run.duration_ms} ms): {result}")
        if not runs:
            out("  none")
        out("Process")
        if gateway.process_state:
            for key, value in gateway.process_state.items():
                out(f"  {key}: {value}")
        else:
            out("  -" if gateway.transport != "stdio" else "  not started")
        pending = gateway.definition_changes.filter(status=ChangeStatus.PENDING).count()
        out(f"Pending definition changes: {pending}" + (" (review with `manage.py drift_approve`)" if pending else ""))
