"""Import a catalog export: create what is missing, report conflicts, all or nothing."""

import json
import os
from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import exchange
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Import a catalog export FILE ('-' for stdin). Idempotent; conflicts are reported and kept unless --overwrite."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")
        parser.add_argument("--overwrite", action="store_true", help="Replace entries that differ from the file.")
        parser.add_argument(
            "--passphrase", help="Passphrase of an export whose secrets used one (or CATALOG_PASSPHRASE)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import sys

        try:
            if options["file"] == "-":
                document = json.load(sys.stdin)
            else:
                with open(options["file"], encoding="utf-8") as handle:
                    document = json.load(handle)
        except OSError as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc.strerror}.") from None
        except ValueError as exc:
            raise CommandError(f"{options['file']} is not JSON: {exc}.") from None
        try:
            report = exchange.catalog_import(
                document=document,
                dry_run=options["dry_run"],
                overwrite=options["overwrite"],
                passphrase=options["passphrase"] or os.environ.get("CATALOG_PASSPHRASE") or None,
            )
        except CatalogError as exc:
            raise CommandError(f"Nothing was imported: {exc.message}") from None
        prefix = "Dry run, nothing changed. Would have " if report.dry_run else ""
        for bucket in ("created", "updated", "unchanged"):
            entries: dict[str, list[str]] = getattr(report, bucket)
            total = sum(len(keys) for keys in entries.values())
            detail = ", ".join(f"{len(keys)} {kind}" for kind, keys in entries.items())
            self.stdout.write(f"{prefix}{bucket}: {total}" + (f" ({detail})" if detail else ""))
        for conflict in report.conflicts:
            self.stdout.write(
                f"conflict: {conflict['kind']} {conflict['key']!r} differs in "
                f"{', '.join(conflict['fields'])} (kept; use --overwrite)"
            )
