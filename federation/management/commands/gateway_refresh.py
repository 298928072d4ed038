"""Re-read an upstream's catalog."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation import services
from registry.exceptions import CatalogError
from registry.models import Gateway


class Command(BaseCommand):
    help = "Re-read the tools, resources, templates and prompts of the upstream NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--timeout", type=float, default=30.0)

    def handle(self, *args: Any, **options: Any) -> None:
        gateway = Gateway.objects.filter(name=options["name"]).first()
        if gateway is None:
            raise CommandError(f"No gateway named {options['name']!r}.")
        try:
            report = services.gateway_refresh(gateway=gateway, timeout=options["timeout"])
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Refreshed {gateway.name!r}: {report.summary()}.")
