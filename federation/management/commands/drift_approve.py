"""Approve changed upstream tool definitions held back for review (GATEWAY_DRIFT_POLICY hold or withhold)."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import catalog_sync
from registry.audit import AuditedCommand
from registry.models import Gateway


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Put the held changed definitions of the named tools (catalog names), of every tool of --gateway NAME, "
        "or of all tools (--all) into service; --list shows what waits without approving anything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tools", nargs="*", metavar="TOOL", help="Catalog names of tools to approve.")
        parser.add_argument("--gateway", help="Only tools of this gateway (all of its held ones without TOOL).")
        parser.add_argument("--all", action="store_true", help="Every held change.")
        parser.add_argument("--list", action="store_true", help="Show the held changes; approve nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        names: list[str] = options["tools"]
        gateway = None
        if options["gateway"]:
            gateway = Gateway.objects.filter(name=options["gateway"]).first()
            if gateway is None:
                raise CommandError(f"No gateway named {options['gateway']!r}.")
        pending = catalog_sync.pending_definition_tools(gateway=gateway, names=names)
        if options["list"]:
            self._list(list(pending))
            return
        if not (names or gateway or options["all"]):
            raise CommandError("Name the tools to approve, or give --gateway NAME or --all (see --list).")
        tools = list(pending)
        missing = sorted(set(names) - {tool.name for tool in tools})
        if missing:
            where = f" of gateway {gateway.name!r}" if gateway else ""
            raise CommandError(
                f"No changed definition waits for approval for: {', '.join(missing)}{where} (see --list)."
            )
        if not tools:
            raise CommandError(
                "No changed definition waits for approval" + (f" for {gateway.name!r}." if gateway else ".")
            )
        for change in catalog_sync.definition_changes_approve(tools=tools, user="manage.py drift_approve"):
            fields = ", ".join(item["field"] for item in change.diff) or "no field"
            self.stdout.write(f"Approved {change.tool.name} ({change.gateway.name}): {fields} changed.")

    def _list(self, tools: list[Any]) -> None:
        if not tools:
            self.stdout.write("No changed definition waits for approval.")
            return
        for tool in tools:
            changed = [
                field for field, value in (tool.pending_definition or {}).items() if getattr(tool, field) != value
            ]
            since = f"{tool.drift_detected_at:%Y-%m-%d %H:%M:%S}" if tool.drift_detected_at else "?"
            gateway = tool.gateway.name if tool.gateway else "-"
            self.stdout.write(f"{tool.name} ({gateway}, since {since}): {', '.join(changed) or 'no field'} changed")
