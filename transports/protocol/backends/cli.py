"""The CLI backend: a tools/call runs one program with an argument list (docs/tool-backends.md). Work in progress."""

from __future__ import annotations

from typing import Any

from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry


class CliBackend(ToolBackend):
    """Tools of integration type ``cli``."""

    def __init__(self, *, max_output_bytes: int = 1024 * 1024) -> None:
        self.max_output_bytes = max_output_bytes

    def available(self, tool: ToolEntry) -> bool:
        return False

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        raise NotImplementedError
