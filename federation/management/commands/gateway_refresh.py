"""Re-read an upstream's catalog (the older name of `gateway_sync NAME`)."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation import sync
from federation.management.output import gateways_named, sync_counts
from registry.audit import AuditedCommand
from registry.choices import SyncTrigger
from registry.exceptions import CatalogError


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Re-read the tools, resources, templates and prompts of the upstream NAME (as `gateway_sync NAME`)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--timeout", type=float, help="Seconds to wait for each answer (GATEWAY_SYNC_TIMEOUT).")

    def handle(self, *args: Any, **options: Any) -> None:
        (gateway,) = gateways_named([options["name"]])
        extra: dict[str, Any] = {"timeout": options["timeout"]} if options["timeout"] is not None else {}
        try:
            result = sync.gateway_sync(gateway=gateway, trigger=SyncTrigger.MANUAL, **extra)
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Refreshed {gateway.name!r}: {sync_counts(result)}.")
