"""Call a tool once, as a test: print the result, what it sent on the way and the time it took."""

import json
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.auth import ALL_SCOPES
from registry.exceptions import CatalogError
from registry.management.tool_options import json_object_option
from transports.protocol.outcome import Caller
from transports.runtime import get_core
from transports.tool_calls import ToolCallReport, tool_call

CALLER = Caller(username="manage.py", scopes=ALL_SCOPES, server=None)


async def _call(name: str, arguments: dict[str, Any]) -> ToolCallReport:
    try:
        return await tool_call(name=name, arguments=arguments, caller=CALLER)
    finally:
        # This loop ends with the command: part cleanly from upstreams and close the backends' pools.
        core = get_core()
        await core.upstreams.aclose()
        for kind in core.backends.kinds:
            close = getattr(core.backends.get(kind), "aclose", None)
            if close is not None:
                await close()


class Command(BaseCommand):
    help = (
        "Call the tool NAME with --arguments JSON (or @FILE) outside any MCP session; print its result, its "
        "progress and log messages, and the elapsed time. Exits with 1 when the tool reports an error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--arguments", help="The tool's arguments as a JSON object, or @FILE (default: {}).")

    def handle(self, *args: Any, **options: Any) -> None:
        arguments = json_object_option("--arguments", options["arguments"]) or {}
        try:
            report = async_to_sync(_call)(options["name"], arguments)
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        for note in report.notifications:
            self.stdout.write(f"{note.get('method')}: {json.dumps(note.get('params', {}), ensure_ascii=False)}")
        answer = report.result if report.error is None else {"error": report.error}
        self.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False))
        self.stdout.write(f"Elapsed: {report.elapsed_ms} ms")
        if report.error is not None:
            raise CommandError(f"The call was refused: {report.error.get('message', report.error)}")
        if report.failed:
            raise CommandError("The tool reported an error (isError).")
