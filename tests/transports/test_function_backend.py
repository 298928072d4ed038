"""Python-function tools (docs/tool-backends.md "Python function"; issue 12 item 4): an allowed function,
its arguments converted by pydantic to the type hints, sync functions in a worker thread and async
ones in the event loop, bounded by the tool's timeout; the return value becomes MCP content and an
exception a tool error.

The functions are tests/fixtures/functions.py (allowed in tests by GATEWAY_FUNCTION_TOOLS =
["tests.fixtures.functions.*"]). Spec: 2025-11-25 server/tools ("Calling Tools", "Error Handling",
"Structured Content"), basic/utilities/progress.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from registry import services
from registry.choices import IntegrationType
from registry.models import Tool
from tests.fixtures import functions
from tests.transports.test_hot_path import _close_worker_connections, asgi_post, world  # noqa: F401
from transports.protocol.backends.base import CallContext
from transports.protocol.backends.function import FunctionBackend
from transports.protocol.catalog import ToolEntry
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Caller
from transports.runtime import get_core

ALLOWED = ["tests.fixtures.functions.*"]
CALLER = Caller(username="hot", scopes=frozenset({"read", "write", "call"}), server=None)


def _context(function: str, *, timeout: float = 30.0) -> CallContext:
    tool = ToolEntry(
        name=function,
        wire={},
        integration_type="function",
        gateway=None,
        upstream_name=function,
        timeout=None,
        backend_config={"function": f"tests.fixtures.functions.{function}"},
    )
    emitted: list[dict] = []

    async def emit(message: dict) -> None:
        emitted.append(message)

    session = SimpleNamespace(protocol_version="2025-11-25", wants_log=lambda level: True)
    exchange = SimpleNamespace(session=session, emit=emit, emitted=emitted)
    return CallContext(tool=tool, params={"_meta": {"progressToken": "p"}}, timeout=timeout, exchange=exchange)


async def _call(function: str, arguments: dict, **options) -> dict:
    return await FunctionBackend(allowed=ALLOWED).call(arguments, _context(function, **options))


# -- the backend ----------------------------------------------------------------------------------


async def test_arguments_are_converted_to_the_type_hints():
    """pydantic turns the JSON arguments into the hinted types: an enum member, a float, a default."""
    result = await _call("convert", {"amount": 10, "to": "USD"})
    assert result["structuredContent"] == {"amount": 12.5, "currency": "USD", "type": "Currency"}
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


async def test_models_lists_and_optional_values_are_converted():
    """A list of objects becomes a list of pydantic models, an omitted Optional is None; a returned
    model becomes its JSON object."""
    prices = [{"amount": 2, "currency": "NOK"}, {"amount": 3.5, "currency": "NOK"}]
    result = await _call("total", {"prices": prices})
    assert result["structuredContent"] == {"amount": 5.5, "currency": "NOK"}
    result = await _call("total", {"prices": prices, "discount": 0.5, "tags": ["a"]})
    assert result["structuredContent"] == {"amount": 2.75, "currency": "NOK"}


async def test_annotated_constraints_and_defaults_apply():
    result = await _call("describe", {"limit": "7", "kinds": ["a", "b"]})
    assert json.loads(result["content"][0]["text"]) == ["int", 7, ["a", "b"]]
    result = await _call("describe", {})
    assert json.loads(result["content"][0]["text"]) == ["int", 10, None]


async def test_arguments_pydantic_refuses_are_a_tool_error_naming_the_field():
    """The gateway checks the JSON schema first; what pydantic still refuses (here a constraint) is a
    tool error naming the field, and the function is not called."""
    result = await _call("describe", {"limit": 0})
    assert result["isError"] is True
    assert "at /limit:" in result["content"][0]["text"]
    result = await _call("add", {"a": 1, "c": 2})
    assert result["isError"] is True
    assert "at /c:" in result["content"][0]["text"]


async def test_an_async_function_is_awaited():
    assert await _call("add", {"a": 2, "b": 3}) == {"content": [{"type": "text", "text": "2 + 3 = 5"}]}


async def test_keyword_only_and_untyped_parameters_are_passed():
    assert (await _call("keyword_only", {"name": "Ada"}))["content"][0]["text"] == "Hello, Ada!"
    result = await _call("untyped", {"value": [1, {"x": None}]})
    assert result["structuredContent"] == {"value": [1, {"x": None}], "flag": False}


async def test_return_values_become_content():
    """A str is text, a list is JSON text without structuredContent, None is no content."""
    assert await _call("words", {"text": "a b  c"}) == {"content": [{"type": "text", "text": '["a","b","c"]'}]}
    assert await _call("nothing", {}) == {"content": []}


async def test_an_exception_is_a_tool_error_with_its_type_and_message_and_no_traceback():
    result = await _call("fail", {"message": "the ledger is locked"})
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "RuntimeError: the ledger is locked" in text
    assert "Traceback" not in text
    assert "functions.py" not in text


async def test_a_sync_function_that_overruns_answers_on_time():
    """The timeout answers the call while the worker thread runs on (a thread cannot be killed)."""
    functions.slow_sync_finished.clear()
    result = await _call("slow_sync", {"seconds": 1.0}, timeout=0.2)
    assert result["isError"] is True
    assert "did not finish within the tool's timeout (0.2 s)" in result["content"][0]["text"]
    assert "worker thread" in result["content"][0]["text"]
    assert not functions.slow_sync_finished.is_set()
    await asyncio.to_thread(functions.slow_sync_finished.wait, 30)  # do not leave the thread to later tests


async def test_an_async_function_that_overruns_is_stopped():
    result = await _call("slow_async", {"seconds": 60}, timeout=0.2)
    assert result["isError"] is True
    assert "timeout (0.2 s)" in result["content"][0]["text"]


async def test_a_sync_function_does_not_block_the_event_loop():
    """While the sync function sleeps in its thread, the loop runs other work."""
    functions.slow_sync_finished.clear()
    call = asyncio.create_task(_call("slow_sync", {"seconds": 0.5}))
    ticks = 0
    while not call.done():
        ticks += 1
        await asyncio.sleep(0.01)
    assert (await call)["content"][0]["text"] == "done"
    assert ticks > 1


async def test_cancelling_an_async_function_cancels_it():
    call = asyncio.create_task(_call("slow_async", {"seconds": 60}))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_function_asking_for_the_context_reports_progress_and_logs():
    """A parameter annotated CallContext gets the call's context and is not an argument."""
    context = _context("with_progress")
    result = await FunctionBackend(allowed=ALLOWED).call({"steps": 2}, context)
    assert result["content"][0]["text"] == "2 steps"
    methods = [message["method"] for message in context.exchange.emitted]
    assert methods == ["notifications/progress", "notifications/progress", "notifications/message"]
    assert context.exchange.emitted[1]["params"] == {
        "progressToken": "p",
        "progress": 2,
        "total": 2,
        "message": "step 2",
    }


def test_only_allowed_functions_are_available():
    """Exact paths and module wildcards (public names only); anything else is never imported or served."""
    backend = FunctionBackend(allowed=["tests.fixtures.functions.*", "json.dumps"])
    entry = _context("convert").tool
    assert backend.available(entry)
    assert not backend.available(_context("_private").tool)
    assert not FunctionBackend(allowed=["tests.fixtures.functions.add"]).available(entry)
    assert not FunctionBackend().available(entry)
    assert not backend.available(_context("no_such_function").tool)
    assert not backend.available(_context("NotAFunction").tool)


async def test_a_function_not_allowed_is_refused_at_call_time():
    with pytest.raises(JsonRpcError, match="not allowed by GATEWAY_FUNCTION_TOOLS"):
        await FunctionBackend(allowed=["other.module.*"]).call({"a": 1}, _context("add"))


def test_the_imported_function_is_cached_per_path():
    backend = FunctionBackend(allowed=ALLOWED)
    assert backend.target("tests.fixtures.functions.add") is backend.target("tests.fixtures.functions.add")


# -- through the gateway --------------------------------------------------------------------------


def _create(name: str, function: str, **data) -> Tool:
    """Saved like every entry point saves it: the definition rules derive the input schema."""
    return services.entry_create(
        Tool,
        data={
            "name": name,
            "integration_type": IntegrationType.FUNCTION,
            "backend_config": {"function": f"tests.fixtures.functions.{function}"},
            **data,
        },
    )


@pytest.fixture
def function_tools(world):  # noqa: F811
    token, _ = world
    _create("convert", "convert")
    _create("total", "total")
    _create("add", "add")
    _create("slow", "slow_async", timeout=0.2)
    _create("progress", "with_progress")
    return token


async def _session(token: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    status, headers, _ = await asgi_post(init, token=token)
    assert status == 200
    return headers["mcp-session-id"]


def _tools_call(name: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


@pytest.mark.django_db(transaction=True)
async def test_function_tools_are_listed_with_the_derived_schema_and_called_through_the_gateway(function_tools):
    token = function_tools
    session = await _session(token)
    _, _, listed = await asgi_post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=token, session=session)
    tools = {tool["name"]: tool for tool in listed["result"]["tools"]}
    assert tools["convert"]["description"] == "Convert an amount of money between currencies."
    assert tools["convert"]["inputSchema"]["required"] == ["amount", "to"]
    _, _, answer = await asgi_post(_tools_call("convert", {"amount": 10, "to": "NOK"}), token=token, session=session)
    assert answer["result"]["structuredContent"] == {"amount": 115.0, "currency": "NOK", "type": "Currency"}
    prices = [{"amount": 1.5, "currency": "USD"}, {"amount": 1, "currency": "USD"}]
    _, _, answer = await asgi_post(_tools_call("total", {"prices": prices}), token=token, session=session)
    assert answer["result"]["structuredContent"] == {"amount": 2.5, "currency": "USD"}
    _, _, answer = await asgi_post(_tools_call("add", {"a": 40, "b": 2}), token=token, session=session)
    assert answer["result"]["content"][0]["text"] == "40 + 2 = 42"


@pytest.mark.django_db(transaction=True)
async def test_the_derived_schema_is_checked_by_the_gateway_before_the_call(function_tools):
    """Arguments that break the derived schema (an unknown currency, a missing amount) never reach the
    function: the gateway's own check answers (SEP-1303 in a 2025-11-25 session)."""
    token = function_tools
    session = await _session(token)
    _, _, answer = await asgi_post(_tools_call("convert", {"amount": 1, "to": "XYZ"}), token=token, session=session)
    assert answer["result"]["isError"] is True
    assert answer["result"]["content"][0]["text"].startswith("Invalid arguments for tool 'convert': at /to")


@pytest.mark.django_db(transaction=True)
async def test_the_tools_timeout_bounds_a_function_call_through_the_gateway(function_tools):
    token = function_tools
    session = await _session(token)
    _, _, answer = await asgi_post(_tools_call("slow", {"seconds": 60}), token=token, session=session)
    assert answer["result"]["isError"] is True
    assert "timeout (0.2 s)" in answer["result"]["content"][0]["text"]


@pytest.mark.django_db(transaction=True)
async def test_a_test_call_of_a_function_tool_returns_its_progress(function_tools):
    """McpCore.call_tool (the test call): the result, and the progress and log messages sent before it."""
    answer, emitted = await get_core().call_tool("progress", {"steps": 3}, CALLER)
    assert answer["result"]["content"][0]["text"] == "3 steps"
    progress = [m["params"]["progress"] for m in emitted if m["method"] == "notifications/progress"]
    assert progress == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
async def test_a_function_the_backend_does_not_allow_is_not_served(function_tools):
    """A tool saved while allowed, served by a backend whose allow-list no longer matches it: left out of
    the catalog, and a call is "Unknown tool"."""
    core = get_core()
    await core.catalog.get()
    core.backends.register(IntegrationType.FUNCTION, FunctionBackend(allowed=["tests.fixtures.functions.add"]))
    answer, _ = await core.call_tool("convert", {"amount": 1, "to": "EUR"}, CALLER)
    assert answer["error"]["code"] == -32602
    assert answer["error"]["message"] == "Unknown tool: convert"
    answer, _ = await core.call_tool("add", {"a": 1}, CALLER)
    assert answer["result"]["content"][0]["text"] == "1 + 1 = 2"
