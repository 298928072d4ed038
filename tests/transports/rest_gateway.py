"""A gateway with REST tools in front of the test HTTP API (tests/fixtures/http_api.py), for the REST
backend's tests: tools are saved through the registry's rules (``full_clean``), and called through
the gateway's own request path, in a 2025-11-25 session over Streamable HTTP (``Gateway.call``) or as
a stateless 2026-07-28 call with progress (``Gateway.test_call``).

    async def test_x(gateway):
        await gateway.add_tool("items", {"url": gateway.api.url("/json")})
        result = await gateway.call("items")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from registry.choices import IntegrationType
from registry.models import Tool
from tests.fixtures.http_api import RunningApi, http_api  # noqa: F401
from tests.transports.test_hot_path import INITIALIZE, asgi_post, world  # noqa: F401
from transports.protocol.backends.rest import RestBackend
from transports.protocol.outcome import Caller
from transports.runtime import get_core

CALLER = Caller(username="hot", scopes=frozenset({"read", "write", "call"}), server=None)
OPEN_SCHEMA = {"type": "object"}


def _save_tool(name: str, config: dict[str, Any], credentials: dict[str, str] | None, fields: dict[str, Any]) -> None:
    tool = Tool(name=name, integration_type=IntegrationType.REST, backend_config=config, **fields)
    tool.input_schema = fields.get("input_schema", OPEN_SCHEMA)
    if credentials:
        tool.set_credentials(credentials)
    tool.full_clean()  # the registry's definition rules, as every entry point applies them
    tool.save()


@dataclass
class Gateway:
    token: str
    api: RunningApi
    session: str | None = None
    backends: list[RestBackend] = field(default_factory=list)

    async def add_tool(
        self, name: str, config: dict[str, Any], *, credentials: dict[str, str] | None = None, **fields: Any
    ) -> None:
        """A REST tool in the catalog (the snapshot is rebuilt for the next call)."""
        await sync_to_async(_save_tool)(name, config, credentials, fields)
        get_core().catalog.invalidate()

    def use(self, backend: RestBackend) -> RestBackend:
        """Serve REST tools with ``backend`` instead of the one made from settings (both are closed
        after the test)."""
        previous = get_core().backends.get(IntegrationType.REST)
        if isinstance(previous, RestBackend):
            self.backends.append(previous)
        get_core().backends.register(IntegrationType.REST, backend)
        self.backends.append(backend)
        return backend

    @property
    def backend(self) -> RestBackend:
        backend = get_core().backends.get(IntegrationType.REST)
        assert isinstance(backend, RestBackend)
        return backend

    async def answer(self, name: str, arguments: dict[str, Any] | None = None, request_id: Any = 3) -> dict:
        """The JSON-RPC answer to tools/call in a 2025-11-25 session."""
        if self.session is None:
            status, headers, _ = await asgi_post(INITIALIZE, token=self.token)
            assert status == 200
            self.session = headers["mcp-session-id"]
        body = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {}},
        }
        status, _, answer = await asgi_post(body, token=self.token, session=self.session)
        assert status == 200
        return answer

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> dict:
        """The CallToolResult of a tools/call in a 2025-11-25 session."""
        answer = await self.answer(name, arguments)
        assert "result" in answer, answer
        return answer["result"]

    async def test_call(self, name: str, arguments: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
        """A stateless 2026-07-28 call with a progress token: (its CallToolResult, the progress sent)."""
        answer, emitted = await get_core().call_tool(name, arguments or {}, CALLER)
        assert "result" in answer, answer
        progress = [m["params"] for m in emitted if m.get("method") == "notifications/progress"]
        return answer["result"], progress

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        assert self.session is not None
        body = {"jsonrpc": "2.0", "method": method, "params": params}
        status, _, _ = await asgi_post(body, token=self.token, session=self.session)
        assert status == 202


def text_of(result: dict) -> str:
    return result["content"][0]["text"]


@pytest.fixture
async def gateway(world, http_api) -> AsyncIterator[Gateway]:  # noqa: F811
    """The in-process gateway (the `world` of test_hot_path, with the REST backend made from the test
    settings: private addresses allowed) and the test API."""
    token, _ = world
    gateway = Gateway(token, http_api)
    yield gateway
    for backend in [*gateway.backends, get_core().backends.get(IntegrationType.REST)]:
        if isinstance(backend, RestBackend):
            await backend.aclose()
