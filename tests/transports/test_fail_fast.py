"""The relay and gateway health: a call to a gateway the snapshot says is unreachable fails at once (no
waiting for the tool's timeout, nothing sent upstream), and a call that fails on the connection tells
federation (hooks.upstream_failed), which marks a healthy gateway degraded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection

from registry.choices import Health
from registry.models import Gateway
from registry.selectors import catalog_rows
from tests.factories import GatewayFactory, ToolFactory
from tests.fixtures.servers import free_port
from transports.protocol import hooks, jsonrpc
from transports.protocol.catalog import build_snapshot
from transports.protocol.core import McpCore
from transports.protocol.outcome import Caller
from transports.protocol.upstream.base import UpstreamClient

HUGE = 1_000_000.0  # seconds: a tool timeout no test may wait for
BOUND = 10.0  # seconds a fail-fast answer may take here, at most (it takes milliseconds)
CALLER = Caller("ada", frozenset({"read", "call"}), None)
INIT = {"params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


class SilentUpstream(UpstreamClient):
    """An upstream that never answers a call, and records the calls it got."""

    def __init__(self) -> None:
        self.initialize_result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}}
        self.era = "legacy"
        self.calls: list[str] = []

    async def connect(self) -> dict:
        return self.initialize_result

    async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
        self.calls.append(method)
        if method == "tools/list":  # what the relay asks to learn what this client's session is offered
            return {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def notify(self, method, params=None) -> None:
        return None

    def set_notification_handler(self, handler) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True


def gateway_row(health: str, last_error: str = "") -> dict[str, Any]:
    return {
        "name": "up",
        "transport": "streamable-http",
        "era": "auto",
        "url": "http://127.0.0.1:9/mcp",
        "command": "",
        "args": [],
        "env": {},
        "cwd": None,
        "auth_type": "none",
        "credentials": {},
        "verify_tls": True,
        "ca_bundle": None,
        "capabilities": {"tools": {}},
        "health": health,
        "last_error": last_error,
    }


def rows(health: str, last_error: str = "") -> dict[str, Any]:
    tool = {
        "id": 1,
        "name": "echo",
        "title": "",
        "description": "",
        "input_schema": {"type": "object", "properties": {}},
        "output_schema": None,
        "annotations": {},
        "integration_type": "mcp",
        "gateway": "up",
        "upstream_name": "echo",
        "timeout": HUGE,
        "backend_config": {},
        "credentials": {},
    }
    return {
        "version": 1,
        "tools": [tool],
        "resources": [],
        "resource_templates": [],
        "prompts": [],
        "servers": [],
        "gateways": [gateway_row(health, last_error)],
    }


def core_with(snapshot_rows: dict[str, Any], upstream: UpstreamClient | None = None) -> McpCore:
    core = McpCore(tool_timeout=HUGE)
    core.catalog._snapshot = build_snapshot(snapshot_rows)
    core.catalog._built = core.catalog._wanted
    if upstream is not None:
        core.upstreams.override("up", upstream)
    return core


async def call_tool(core: McpCore, name: str = "echo") -> dict[str, Any]:
    session, _ = await core.initialize(INIT, CALLER)

    async def emit(message: dict) -> None:
        return None

    request = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}}
    answer = await asyncio.wait_for(core.answer(session, request, emit), BOUND)
    assert answer is not None
    return answer


async def test_a_call_to_an_unreachable_gateway_fails_at_once_with_the_reason():
    upstream = SilentUpstream()
    core = core_with(rows("unreachable", "connection refused by 127.0.0.1:9"), upstream)
    answer = await call_tool(core)  # with a tool timeout of HUGE: only failing fast answers within BOUND
    assert answer["error"] == {
        "code": jsonrpc.SERVER_ERROR,
        "message": "Upstream 'up' is unreachable: connection refused by 127.0.0.1:9; the gateway sends it no "
        "calls until a health check succeeds.",
    }
    assert "tools/call" not in upstream.calls  # nothing was sent


async def test_an_unreachable_gateway_without_a_recorded_error_still_fails_fast():
    core = core_with(rows("unreachable"), SilentUpstream())
    answer = await call_tool(core)
    assert "is unreachable: its health checks failed;" in answer["error"]["message"]


@pytest.mark.parametrize("health", ["healthy", "degraded", "unknown"])
async def test_calls_to_reachable_gateways_are_sent(health):
    """Only unreachable fails fast: a degraded gateway still gets its calls (it may be recovering)."""
    upstream = SilentUpstream()
    core = core_with(rows(health), upstream)
    session, _ = await core.initialize(INIT, CALLER)

    async def emit(message: dict) -> None:
        return None

    request = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    task = asyncio.create_task(core.answer(session, request, emit))
    deadline = asyncio.get_running_loop().time() + BOUND
    while "tools/call" not in upstream.calls:
        assert asyncio.get_running_loop().time() < deadline, "the call never reached the upstream"
        await asyncio.sleep(0.01)
    task.cancel()


# ---- the passive signal --------------------------------------------------------------------------------------


@pytest.fixture
def signals():
    """What hooks.upstream_failed sends, recorded (beside federation's own receiver)."""
    seen: list[tuple[str, str]] = []

    async def record(gateway: str, sentence: str) -> None:
        seen.append((gateway, sentence))

    hooks.upstream_failed.connect(record)
    yield seen
    hooks.upstream_failed.disconnect(record)


async def eventually(predicate, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + BOUND
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def close_connection() -> None:
    connection.close()


@pytest.mark.django_db(transaction=True)
async def test_a_connection_failure_signals_and_degrades_a_healthy_gateway(signals):
    port = free_port()
    gateway = await sync_to_async(GatewayFactory)(name="up", url=f"http://127.0.0.1:{port}/mcp", health="healthy")
    await sync_to_async(ToolFactory)(name="echo", gateway=gateway, integration_type="mcp", timeout=HUGE)
    core = core_with(await sync_to_async(catalog_rows)())  # the real snapshot of the database
    try:
        answer = await call_tool(core)
        assert answer["error"]["message"] == f"Upstream 'up' is unavailable: connection refused by 127.0.0.1:{port}."

        def is_degraded() -> bool:
            try:
                return Gateway.objects.get(name="up").health == Health.DEGRADED
            except OperationalError:  # the in-memory SQLite test database locks the table while the write runs
                return False

        async def degraded() -> bool:
            return await sync_to_async(is_degraded)()

        await eventually(degraded, "the gateway to be marked degraded")

        async def signalled() -> bool:  # receivers run in order: federation's (which degrades) before ours
            return bool(signals)

        await eventually(signalled, "the hook to reach the test's receiver")
        assert signals == [("up", f"connection refused by 127.0.0.1:{port}")]
        stored = await sync_to_async(Gateway.objects.get)(name="up")
        assert stored.last_error == f"connection refused by 127.0.0.1:{port}"

        # The snapshot in hand still says healthy: more failed calls send nothing more (one signal per
        # gateway and snapshot version).
        await call_tool(core)
        await asyncio.sleep(0)
        assert len(signals) == 1
    finally:
        await core.upstreams.aclose()
        await sync_to_async(close_connection)()


async def test_a_failed_call_to_a_degraded_gateway_signals_nothing(signals):
    core = core_with(rows("degraded"))  # no override: the real client to port 9 (closed)
    answer = await call_tool(core)
    assert answer["error"]["message"].startswith("Upstream 'up' is unavailable: connection refused by 127.0.0.1:9")
    await asyncio.sleep(0)
    assert signals == []


async def test_an_error_the_upstream_answered_signals_nothing(signals):
    class Refusing(SilentUpstream):
        async def request(self, method, params=None, *, timeout=None, on_message=None, headers=None) -> dict:
            from transports.protocol.upstream.base import UpstreamError

            raise UpstreamError(-32602, "Invalid params: x is required")

    core = core_with(rows("healthy"), Refusing())
    answer = await call_tool(core)
    assert answer["error"] == {"code": -32602, "message": "Invalid params: x is required"}
    await asyncio.sleep(0)
    assert signals == []
