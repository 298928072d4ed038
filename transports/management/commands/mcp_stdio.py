"""`manage.py mcp_stdio --url URL [--token T]`: serve MCP on stdin/stdout, relayed to a gateway.

A thin entry point: the relay is the package `transports.stdio_bridge` (no Django; its options, logging and
`serve` are in `stdio_bridge.cli`), which `scripts/mcp-gateway-stdio` runs too. Nothing but MCP messages is
written to stdout; logs go to stderr.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from transports import stdio_bridge


class Command(BaseCommand):
    help = (
        "Serve MCP over stdio for a client that only speaks stdio (a desktop app), relayed to an MCP Gateway "
        f"over Streamable HTTP. Pass the token in {stdio_bridge.TOKEN_ENV} rather than --token."
    )
    # stdout belongs to the MCP client: no system checks, no migration warnings.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        stdio_bridge.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        stdio_bridge.configure_logging(options["log_level"])
        try:
            config = stdio_bridge.config_from(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        asyncio.run(stdio_bridge.serve(config))
