"""The tool-backend interface, the per-process registry of backends, and the dotted-path loader."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transports.protocol import jsonrpc
from transports.protocol.catalog import ToolEntry
from transports.protocol.exchange import Exchange


@dataclass
class CallContext:
    """What a backend may use during one call: the tool, the request, and the way back to the client
    (progress, logs, and server-to-client requests such as elicitation or sampling). Cancellation
    arrives as ``asyncio.CancelledError`` in the backend's ``call``."""

    tool: ToolEntry
    params: dict[str, Any]  # the tools/call params as the client sent them (with _meta)
    timeout: float
    exchange: Exchange

    @property
    def progress_token(self) -> Any:
        meta = self.params.get("_meta")
        return meta.get("progressToken") if isinstance(meta, dict) else None

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress, when the client asked for it (a progressToken in the request's _meta)."""
        token = self.progress_token
        if token is None:
            return
        params: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.exchange.emit(jsonrpc.notification("notifications/progress", params))

    async def log(self, level: str, data: Any, logger: str | None = None) -> None:
        """A log message for the client, at or above the level it chose."""
        if not self.exchange.session.wants_log(level):
            return
        params: dict[str, Any] = {"level": level, "data": data}
        if logger is not None:
            params["logger"] = logger
        await self.exchange.emit(jsonrpc.notification("notifications/message", params))

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request to the client (e.g. elicitation/create); its JSON-RPC answer ({"result"} or {"error"})."""
        return await self.exchange.client_request(method, params)


class ToolBackend(ABC):
    """Runs the tools of one integration type."""

    def available(self, tool: ToolEntry) -> bool:
        """Whether this backend can serve ``tool`` at all (an unservable tool is not advertised)."""
        return True

    @abstractmethod
    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        """The CallToolResult of calling ``context.tool`` with ``arguments``; raise JsonRpcError for a
        protocol error, return ``isError`` content for a tool that ran and failed."""


class ToolBackends:
    """The backends of this process by integration type."""

    def __init__(self, backends: Mapping[str, ToolBackend] | None = None) -> None:
        self._backends: dict[str, ToolBackend] = dict(backends or {})
        # Called after a change: the catalog snapshot must be rebuilt (what is advertised changed).
        self.on_change: Callable[[], None] | None = None

    def register(self, kind: str, backend: ToolBackend) -> None:
        self._backends[kind] = backend
        if self.on_change is not None:
            self.on_change()

    def unregister(self, kind: str) -> None:
        if self._backends.pop(kind, None) is not None and self.on_change is not None:
            self.on_change()

    def get(self, kind: str) -> ToolBackend | None:
        return self._backends.get(kind)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._backends)

    def serves(self, tool: ToolEntry) -> bool:
        """A backend is registered for the tool's kind and can serve it."""
        backend = self._backends.get(tool.integration_type)
        return backend is not None and backend.available(tool)


def load_backend(path: str, **options: Any) -> ToolBackend:
    """The backend class at the dotted ``path`` ("package.module.ClassName"), made with ``options``."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path to a backend class")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, ToolBackend)):
        raise ImportError(f"{path!r} is not a ToolBackend class")
    return cls(**options)
