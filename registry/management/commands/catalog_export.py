"""Write the whole catalog as one JSON document."""

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from registry import exchange
from registry.representation import KINDS


class Command(BaseCommand):
    help = "Export the catalog as JSON to stdout or a file. Secrets only with --include-secrets (encrypted)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--output", "-o", help="File to write (default: stdout).")
        parser.add_argument("--include-secrets", action="store_true", help="Include upstream credentials, encrypted.")
        parser.add_argument(
            "--passphrase",
            help="Encrypt the secrets with this passphrase instead of this installation's keys "
            "(or set CATALOG_PASSPHRASE in the environment).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import os

        passphrase = options["passphrase"] or os.environ.get("CATALOG_PASSPHRASE") or None
        document = exchange.catalog_export(include_secrets=options["include_secrets"], passphrase=passphrase)
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8") as handle:
                handle.write(text)
            counts = ", ".join(f"{len(document[kind.key])} {kind.key}" for kind in KINDS)
            self.stderr.write(f"Wrote {options['output']}: {counts}.")
        else:
            sys.stdout.write(text)
