"""An in-memory backend for tests: tools answered by Python callables, by tool name."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry

Handler = Callable[[dict[str, Any], CallContext], dict[str, Any] | Awaitable[dict[str, Any]]]


class InMemoryBackend(ToolBackend):
    """Serves the tools it has a handler for; records every call in ``calls``."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def available(self, tool: ToolEntry) -> bool:
        return tool.name in self.handlers

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        self.calls.append((context.tool.name, arguments))
        result = self.handlers[context.tool.name](arguments, context)
        if inspect.isawaitable(result):
            result = await result
        return result
