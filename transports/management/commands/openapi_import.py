"""Import REST tools from an OpenAPI document (a file or an http(s) URL)."""

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry.audit import AuditedCommand
from registry.exceptions import CatalogError
from registry.management.tool_options import json_object_option
from transports import openapi_sources


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Make a REST tool of each operation of the OpenAPI 3.0 or 3.1 document SOURCE (a file, JSON or YAML, "
        "or an http(s) URL). Importing the same SOURCE again updates its tools in place and removes those "
        "whose operation is gone. Nothing changes when the document has errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="A file path or an http(s) URL.")
        parser.add_argument("--server", help="A virtual server that gets the imported tools.")
        parser.add_argument(
            "--include",
            action="append",
            default=[],
            metavar="PATTERN",
            help="Only operations matching this pattern (repeatable).",
        )
        parser.add_argument(
            "--source",
            dest="name",
            help="Name the document (default: the URL, or the file's absolute path); a re-import with the same "
            "name updates its tools.",
        )
        parser.add_argument("--base-url", help="The API's base URL, instead of the document's servers.")
        parser.add_argument(
            "--credentials",
            help='Secrets by security scheme name as JSON, or @FILE: {"bearerAuth": {"token": "..."}}.',
        )
        parser.add_argument("--dry-run", action="store_true", help="Report what would change; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        source: str = options["source"]
        given: dict[str, Any] = {}
        if openapi_sources.is_url(source):
            given["url"] = source
        else:
            try:
                given["document"] = Path(source).read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {source}: {exc.strerror}.") from None
            # The resolved path names the document, so a re-import from another directory matches it.
            given["source"] = str(Path(source).resolve())
        if options["name"]:
            given["source"] = options["name"]
        try:
            report = openapi_sources.openapi_import(
                **given,
                server=options["server"],
                include=options["include"],
                base_url=options["base_url"],
                dry_run=options["dry_run"],
                credentials=json_object_option("--credentials", options["credentials"]),
            )
        except CatalogError as exc:
            raise CommandError(f"Nothing was imported: {exc.message}") from None
        if report.get("dry_run"):
            self.stdout.write("Dry run, nothing changed. The import would do this:")
        for label, count, items in openapi_sources.report_lines(report):
            if count is None:
                self.stdout.write(f"{label}: {', '.join(items)}")
                continue
            self.stdout.write(f"{label}: {count}")
            for item in items:
                self.stdout.write(f"  {item}")
