"""Check a tool definition as tool_add would, storing nothing."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry import services
from registry.exceptions import CatalogError
from registry.management.tool_options import add_tool_arguments, describe, tool_data


class Command(BaseCommand):
    help = (
        "Check the tool NAME of --kind rest, cli or function defined by --config (the options of tool_add) "
        "with every rule tool_add applies; store nothing. Prints the definition as it would be stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_tool_arguments(parser, kind_required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        data = {"name": options["name"], **tool_data(options)}
        try:
            tool = services.tool_validate(data=data, server=options["server"])
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Valid: {describe(tool)}; nothing was stored.")
        stored = {"backend_config": tool.backend_config, "input_schema": tool.input_schema}
        self.stdout.write(json.dumps(stored, indent=2))
