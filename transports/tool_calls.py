"""The test call: run one tool with given arguments outside any client session and report what came
back, what it sent on the way (progress, logs) and how long it took. Shared by the REST API
(``transports.api``), the admin's "Test call" page and ``manage.py tool_call``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from registry import selectors
from registry.exceptions import CatalogError, NotFound
from registry.models import Tool
from transports.protocol.catalog import CatalogUnavailable
from transports.protocol.outcome import Caller
from transports.runtime import get_core


class NotLoaded(CatalogError):
    """The catalog cannot be loaded right now (the database is unreachable)."""

    status = 503


@dataclass
class ToolCallReport:
    """One test call: the JSON-RPC ``result`` or ``error``, the notifications, the elapsed time."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)
    elapsed_ms: float = 0.0

    @property
    def failed(self) -> bool:
        """The call ended in a protocol error or the tool reported an error (``isError``)."""
        return self.error is not None or bool((self.result or {}).get("isError"))

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"result": self.result} if self.error is None else {"error": self.error}
        return body | {"notifications": self.notifications, "elapsed_ms": self.elapsed_ms}


def _why_not_callable(name: str) -> str:
    try:
        tool = selectors.entry_by_name(Tool, name=name)
    except NotFound:
        return f"No tool named {name!r}."
    if not tool.enabled:
        return f"Tool {name!r} is disabled; enable it to call it."
    if tool.gateway_id is not None and not tool.gateway.enabled:  # type: ignore[union-attr]
        return f"Tool {name!r} comes from gateway {tool.gateway.name!r}, which is disabled."  # type: ignore[union-attr]
    return (
        f"Tool {name!r} ({tool.integration_type}) cannot be served by this gateway: no backend here runs it "
        "(a function not allowed by GATEWAY_FUNCTION_TOOLS, or a kind whose backend is not enabled), or it "
        "changed a moment ago and this process has not reloaded the catalog yet."
    )


async def tool_call(
    *,
    name: str,
    arguments: dict[str, Any],
    caller: Caller,
    on_notification: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> ToolCallReport:
    """Call the tool ``name`` as ``caller`` would over MCP (2026-07-28, no session, progress asked for);
    NotFound naming why when the gateway serves no such tool. ``on_notification`` is awaited with each
    notification (progress, log message) as the tool sends it; the report lists them all as well.
    Cancelling the caller's task cancels the call (the backend sees ``asyncio.CancelledError``)."""
    core = get_core()
    try:
        view = await core.view(None)
    except CatalogUnavailable as exc:
        raise NotLoaded(str(exc)) from None
    if name not in view.tool_by_name:
        raise NotFound(await sync_to_async(_why_not_callable)(name))
    started = time.perf_counter()
    answer, emitted = await core.call_tool(name, arguments, caller, on_notification=on_notification)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    notifications = [message for message in emitted if "method" in message and "id" not in message]
    if "error" in answer:
        return ToolCallReport(error=answer["error"], notifications=notifications, elapsed_ms=elapsed_ms)
    return ToolCallReport(result=answer.get("result") or {}, notifications=notifications, elapsed_ms=elapsed_ms)
