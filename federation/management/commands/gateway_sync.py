"""Read upstreams' catalogs now (all enabled gateways when none is named)."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation import sync
from federation.management.output import gateways_named, sync_counts
from registry.audit import AuditedCommand
from registry.choices import SyncTrigger
from registry.exceptions import CatalogError


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Sync the catalogs of the gateways NAME... (every enabled gateway when none is named) now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")
        parser.add_argument("--timeout", type=float, help="Seconds to wait for each answer (GATEWAY_SYNC_TIMEOUT).")

    def handle(self, *args: Any, **options: Any) -> None:
        gateways = gateways_named(options["names"])
        if not gateways:
            self.stdout.write("No enabled gateways to sync.")
            return
        extra: dict[str, Any] = {"timeout": options["timeout"]} if options["timeout"] is not None else {}
        failed = 0
        for gateway in gateways:
            try:
                result = sync.gateway_sync(gateway=gateway, trigger=SyncTrigger.MANUAL, **extra)
            except CatalogError as exc:
                failed += 1
                self.stderr.write(f"sync of {gateway.name!r} failed: {exc.message}")
                continue
            self.stdout.write(f"synced {gateway.name!r}: {sync_counts(result)}")
        if failed:
            raise CommandError(f"{failed} of {len(gateways)} syncs failed.")
