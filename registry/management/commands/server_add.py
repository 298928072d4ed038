"""Compose a virtual server from gateways and tools."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry import services
from registry.exceptions import CatalogError
from registry.models import Gateway, Prompt, Resource, ResourceTemplate, Tool, VirtualServer


class Command(BaseCommand):
    help = "Create (or extend) the virtual server NAME with every entry of --gateway G and the named --tool T."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--gateway", action="append", default=[], help="Include everything from this gateway.")
        parser.add_argument("--tool", action="append", default=[], help="Include this tool (repeatable).")
        parser.add_argument("--description", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        gateways = list(Gateway.objects.filter(name__in=options["gateway"]))
        missing = sorted(set(options["gateway"]) - {g.name for g in gateways})
        if missing:
            raise CommandError(f"No gateway named {', '.join(map(repr, missing))}.")
        members: dict[str, list[str]] = {
            "tools": list(options["tool"])
            + list(Tool.objects.filter(gateway__in=gateways).values_list("name", flat=True)),
            "resources": list(Resource.objects.filter(gateway__in=gateways).values_list("uri", flat=True)),
            "resource_templates": list(
                ResourceTemplate.objects.filter(gateway__in=gateways).values_list("uri_template", flat=True)
            ),
            "prompts": list(Prompt.objects.filter(gateway__in=gateways).values_list("name", flat=True)),
        }
        existing = VirtualServer.objects.filter(name=options["name"]).first()
        try:
            if existing is None:
                server = services.entry_create(
                    VirtualServer, data={"name": options["name"], "description": options["description"], **members}
                )
                verb = "Created"
            else:
                current = {
                    "tools": [t.name for t in existing.tools.all()],
                    "resources": [r.uri for r in existing.resources.all()],
                    "resource_templates": [t.uri_template for t in existing.resource_templates.all()],
                    "prompts": [p.name for p in existing.prompts.all()],
                }
                server = services.entry_update(existing, data={k: current[k] + v for k, v in members.items()})
                verb = "Updated"
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        counts = ", ".join(f"{getattr(server, field).count()} {field.replace('_', ' ')}" for field in members)
        self.stdout.write(f"{verb} virtual server {server.name!r}: {counts}. Endpoint: /servers/{server.name}/mcp")
