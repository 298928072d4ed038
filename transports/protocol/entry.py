"""The request entry of both eras: every MCP request answered by the core is counted (``observe``),
logged (the access log, when on) and traced (a SERVER span, when on) here, once.

``McpCore.answer`` (a session's request, any transport) and ``McpCore.handle_stateless`` (a 2026-07-28
request) hand ``entered`` the coroutine that answers; what it returns is passed back unchanged. The
tool's gateway in the access line is read from the catalog snapshot in hand: logging never waits for a
rebuild.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from transports.protocol import observe, tracing
from transports.protocol import vocabulary as mcp
from transports.protocol.catalog import CatalogCache


class Who(Protocol):
    """A session or a 2026-07-28 caller: whom the request came from."""

    @property
    def username(self) -> str: ...

    @property
    def server(self) -> str | None: ...


async def entered(
    answering: Coroutine[Any, Any, dict[str, Any] | None],
    message: dict[str, Any],
    who: Who,
    *,
    catalog: CatalogCache,
    session_id: str,
    transport: str,
    headers: Mapping[str, str] | None,
    attributes: dict[str, Any],
) -> dict[str, Any] | None:
    """Await ``answering`` (the answer to ``message``; None: cancelled), observed."""
    started = observe.recorder.clock()
    if tracing.active:
        with tracing.server_span(message, headers, attributes) as span:
            answer = await answering
            _observed(catalog, message, answer, started, who, session_id, transport, span)
        return answer
    answer = await answering
    _observed(catalog, message, answer, started, who, session_id, transport, None)
    return answer


def _observed(
    catalog: CatalogCache,
    message: dict[str, Any],
    answer: dict[str, Any] | None,
    started: float,
    who: Who,
    session_id: str,
    transport: str,
    span: Any,
) -> None:
    outcome = observe.outcome_of(answer)
    observe.recorder.request(message["method"], outcome, started)
    if span is not None:
        tracing.end_server_span(span, observe.REQUEST_OUTCOMES[outcome])
    access = observe.access
    if access is None:
        return
    tool, gateway = "", ""
    params = message.get("params")
    if message["method"] == mcp.TOOLS_CALL and isinstance(params, dict) and isinstance(params.get("name"), str):
        tool = params["name"]
        snapshot = catalog._snapshot  # the current one; logging never waits for a rebuild
        view = snapshot.view(who.server) if snapshot is not None else None
        entry = view.tool_by_name.get(tool) if view is not None else None
        gateway = (entry.gateway or observe.LOCAL) if entry is not None else ""
    access.write(
        message,
        outcome,
        observe.recorder.clock() - started,
        user=who.username,
        session=session_id,
        server=who.server,
        tool=tool,
        gateway=gateway,
        transport=transport,
        trace_id=tracing.trace_id(span) if span is not None else "",
    )
