"""The REST backend: a tools/call becomes one HTTP request (docs/tool-backends.md). Work in progress."""

from __future__ import annotations

from typing import Any

from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry


class RestBackend(ToolBackend):
    """Tools of integration type ``rest`` (including those imported from OpenAPI)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 5,
        max_connections: int = 100,
    ) -> None:
        self.allow_private = allow_private
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self.max_connections = max_connections

    def available(self, tool: ToolEntry) -> bool:
        return False

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        raise NotImplementedError
