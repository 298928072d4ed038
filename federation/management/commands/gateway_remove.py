"""Delete a gateway and everything it brought into the catalog."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation.management.output import gateways_named
from registry import services
from registry.audit import AuditedCommand


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = "Remove the gateway NAME with its tools, resources, templates and prompts (asks first unless --yes)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--yes", "-y", action="store_true", help="Do not ask for confirmation.")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation (for scripts).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        (gateway,) = gateways_named([options["name"]])
        counts = {
            "tools": gateway.tools.count(),
            "resources": gateway.resources.count(),
            "resource templates": gateway.resource_templates.count(),
            "prompts": gateway.prompts.count(),
        }
        what = ", ".join(f"{count} {label}" for label, count in counts.items())
        if options["interactive"] and not options["yes"]:
            try:
                answer = input(f"Remove gateway {gateway.name!r} and its {what}? Type 'yes' to confirm: ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("yes", "y"):
                raise CommandError("Nothing removed.")
        services.entry_delete(gateway)
        self.stdout.write(f"Removed {gateway.name!r} and its {what}.")
