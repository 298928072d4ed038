"""Compose a virtual server from whole gateways and single tools."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import services
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError
from registry.models import VirtualServer


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Create (or extend) the virtual server NAME with everything from --gateway G (kept up to date as "
        "the gateway changes) and the named --tool T."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--gateway", action="append", default=[], help="Include everything from this gateway.")
        parser.add_argument("--tool", action="append", default=[], help="Include this tool (repeatable).")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        existing = VirtualServer.objects.filter(name=options["name"]).first()
        try:
            if existing is None:
                server = services.entry_create(
                    VirtualServer,
                    data={
                        "name": options["name"],
                        "description": options["description"],
                        "gateways": options["gateway"],
                        "tools": options["tool"],
                    },
                )
                verb = "Created"
            else:
                gateways = [g.name for g in existing.gateways.all()] + options["gateway"]
                tools = [t.name for t in existing.tools.all()] + options["tool"]
                server = services.entry_update(existing, data={"gateways": gateways, "tools": tools})
                verb = "Updated"
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        gateways = ", ".join(g.name for g in server.gateways.all()) or "none"
        self.stdout.write(
            f"{verb} virtual server {server.name!r}: gateways {gateways}; {server.tools.count()} single tools. "
            f"Endpoints: {_endpoints(server.name)}"
        )


def _endpoints(name: str) -> str:
    base = f"/servers/{name}"
    return (
        f"{base}/mcp (Streamable HTTP), {base}/sse (HTTP+SSE), {base}/ws (WebSocket), "
        f"{base}/rpc (JSON-RPC over plain HTTP)"
    )
