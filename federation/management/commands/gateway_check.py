"""Health-check upstreams now and print what each one's state is."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation import health
from federation.management.output import gateways_named, when
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Health-check the gateways NAME... (every enabled gateway when none is named) now and print each one's "
        "state, last error, consecutive failures and time of the check. Exit status 1 when a check failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME")

    def handle(self, *args: Any, **options: Any) -> None:
        gateways = gateways_named(options["names"])
        if not gateways:
            self.stdout.write("No enabled gateways to check.")
            return
        failed = 0
        for gateway in gateways:
            error = ""
            try:
                health.gateway_check(gateway=gateway)
            except CatalogError as exc:
                error = exc.message
            gateway.refresh_from_db()
            if error or gateway.consecutive_failures:
                failed += 1
            self.stdout.write(
                f"{gateway.name}: {gateway.health} (consecutive failures: {gateway.consecutive_failures}, "
                f"last checked: {when(gateway.last_checked_at)})"
            )
            if error or gateway.last_error:
                self.stdout.write(f"  last error: {error or gateway.last_error}")
        if failed:
            raise CommandError(f"{failed} of {len(gateways)} checks failed.")
