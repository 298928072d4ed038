"""The Python-function backend: a tools/call calls an allowed function (docs/tool-backends.md). Work in progress."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.catalog import ToolEntry


class FunctionBackend(ToolBackend):
    """Tools of integration type ``function``; only functions matched by ``allowed`` run."""

    def __init__(self, *, allowed: Sequence[str] = ()) -> None:
        self.allowed = tuple(allowed)

    def available(self, tool: ToolEntry) -> bool:
        return False

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        raise NotImplementedError
