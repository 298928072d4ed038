"""The gateway checks a wrapped tool's arguments against its input schema before any call (JSON
Schema 2020-12, compiled once per snapshot): nothing upstream would. Spec: 2025-11-25 server/tools
"Error Handling" (SEP-1303: input validation errors are tool execution errors, `isError: true`);
revisions before it list invalid arguments as a protocol error (-32602).

Also the test call (`McpCore.call_tool`): one call outside any session, on the 2026-07-28 path.
"""

from __future__ import annotations

import pytest

from registry.choices import IntegrationType
from tests.factories import ToolFactory
from tests.transports.test_hot_path import asgi_post, world  # noqa: F401
from transports.protocol.backends.memory import InMemoryBackend
from transports.protocol.outcome import Caller
from transports.runtime import get_core

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "units": {"enum": ["metric", "imperial"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture
def forecast(world):  # noqa: F811
    token, _ = world
    ToolFactory(name="forecast", integration_type=IntegrationType.FUNCTION, gateway=None, input_schema=SCHEMA)
    backend = InMemoryBackend({"forecast": lambda arguments, context: {"content": [{"type": "text", "text": "ok"}]}})
    get_core().backends.register(IntegrationType.FUNCTION, backend)
    return token, backend


async def _session(token: str, version: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    status, headers, _ = await asgi_post(init, token=token)
    assert status == 200
    return headers["mcp-session-id"]


def _call(arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "forecast", "arguments": arguments}}


BAD = [
    ({}, '"city" is a required property'),
    ({"city": "Oslo", "days": "three"}, 'at /days: "three" is not of type "integer"'),
    ({"city": "Oslo", "days": 30}, "at /days: 30 is greater than the maximum of 14"),
    ({"city": "Oslo", "units": "kelvin"}, "at /units:"),
    ({"city": "Oslo", "colour": "red"}, "colour"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("arguments", "names"), BAD)
async def test_arguments_that_fail_the_schema_are_a_tool_error_naming_the_field(forecast, arguments, names):
    """2025-11-25 session: an isError result whose text names the field; the backend is never called."""
    token, backend = forecast
    session = await _session(token, "2025-11-25")
    status, _, answer = await asgi_post(_call(arguments), token=token, session=session)
    assert status == 200
    result = answer["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert text.startswith("Invalid arguments for tool 'forecast'")
    assert names in text
    assert backend.calls == []


@pytest.mark.django_db(transaction=True)
async def test_older_sessions_get_invalid_params_naming_the_field(forecast):
    """A 2025-06-18 session gets -32602 with the field's JSON pointer in the error data."""
    token, backend = forecast
    session = await _session(token, "2025-06-18")
    status, _, answer = await asgi_post(_call({"city": "Oslo", "days": "x"}), token=token, session=session)
    assert status == 200
    assert answer["error"]["code"] == -32602
    assert "at /days" in answer["error"]["message"]
    assert answer["error"]["data"] == {"field": "/days"}
    assert backend.calls == []


@pytest.mark.django_db(transaction=True)
async def test_valid_arguments_reach_the_backend(forecast):
    token, backend = forecast
    session = await _session(token, "2025-11-25")
    _status, _, answer = await asgi_post(_call({"city": "Oslo", "days": 3}), token=token, session=session)
    assert answer["result"]["content"][0]["text"] == "ok"
    assert backend.calls == [("forecast", {"city": "Oslo", "days": 3})]


@pytest.mark.django_db(transaction=True)
async def test_the_validator_is_compiled_once_per_snapshot(forecast):
    """The compiled validator lives on the snapshot's entry: the same object for every call."""
    core = get_core()
    first = (await core.catalog.get()).catalog.tool_by_name["forecast"].input_validator
    again = (await core.catalog.get()).catalog.tool_by_name["forecast"].input_validator
    assert first is not None
    assert first is again


@pytest.mark.django_db(transaction=True)
async def test_a_test_call_runs_the_tool_outside_any_session(forecast):
    """call_tool answers like a 2026-07-28 tools/call, and reports argument errors the same way."""
    core = get_core()
    caller = Caller(username="hot", scopes=frozenset({"read", "write", "call"}), server=None)
    answer, _emitted = await core.call_tool("forecast", {"city": "Oslo"}, caller)
    assert answer["result"]["content"][0]["text"] == "ok"
    answer, _ = await core.call_tool("forecast", {"days": 2}, caller)
    assert answer["result"]["isError"] is True
    answer, _ = await core.call_tool("nope", {}, caller)
    assert answer["error"]["code"] == -32602


REMOTE = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/steal.json"}}}


@pytest.mark.django_db
def test_a_wrapped_tool_schema_with_a_remote_reference_is_refused():
    """The gateway enforces a wrapped tool's schema itself; a remote $ref would make it fetch a URL, so
    the definition is refused naming the reference, and nothing is stored."""
    from registry import services
    from registry.exceptions import InvalidInput
    from registry.models import Tool

    data = {
        "name": "remote_ref",
        "integration_type": "function",
        "backend_config": {"function": "tests.fixtures.functions.add"},
        "input_schema": REMOTE,
    }
    with pytest.raises(InvalidInput, match=r"input_schema: The gateway cannot enforce this schema: .*steal\.json"):
        services.entry_create(Tool, data=data)
    assert not Tool.objects.filter(name="remote_ref").exists()


def test_compiling_a_schema_never_fetches_a_remote_reference():
    """A schema that slipped past the registry with a remote $ref is left unenforced, not fetched: the
    listening socket the reference names is never connected to."""
    import socket

    from transports.protocol.json_schema import compile_schema

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        schema = {"type": "object", "properties": {"a": {"$ref": f"http://127.0.0.1:{port}/steal.json"}}}
        assert compile_schema(schema, what="tool 'x'") is None
        with pytest.raises(BlockingIOError):
            listener.accept()
