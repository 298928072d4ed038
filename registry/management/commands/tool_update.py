"""Change a tool: only the options given."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from registry import selectors, services
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError
from registry.management.tool_options import add_tool_arguments, describe, tool_data
from registry.models import Tool


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Change the tool NAME: only what the options give (--config replaces the whole definition; "
        "--credentials replaces the stored secrets, {} clears them). Nothing changes unless all of it is valid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_tool_arguments(parser, kind_required=False)

    def handle(self, *args: Any, **options: Any) -> None:
        data = tool_data(options)
        if not data and not options["server"]:
            raise CommandError("Nothing to change: give --config, --kind, --input-schema, --credentials, ...")
        try:
            tool = selectors.entry_by_name(Tool, name=options["name"])
            services.tool_update(tool=tool, data=data, server=options["server"])
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        joined = f", in virtual server {options['server']!r}" if options["server"] else ""
        self.stdout.write(f"Updated {describe(tool)}{joined}: {', '.join(sorted(data)) or 'membership'}.")
