"""Add a REST, CLI or Python-function tool."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import services
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError
from registry.management.tool_options import add_tool_arguments, describe, tool_data


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Add the tool NAME of --kind rest, cli or function, defined by --config JSON or @FILE "
        "(docs/tool-backends.md). Nothing is stored unless the whole definition is valid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_tool_arguments(parser, kind_required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        data = {"name": options["name"], **tool_data(options)}
        try:
            tool = services.tool_create(data=data, server=options["server"])
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        joined = f", in virtual server {options['server']!r}" if options["server"] else ""
        self.stdout.write(f"Added {describe(tool)}{joined}.")
