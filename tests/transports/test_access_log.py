"""The access log (docs/governance.md, "Logs, metrics and traces"): one JSON line per MCP request from the
core's request entry, arguments only when asked for and then redacted, off by default."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.conf import settings as django_settings

from gateway_project.logformat import JsonFormatter
from registry import auth
from tests.factories import GatewayFactory, ToolFactory, UserFactory
from tests.transports.test_hot_path import INITIALIZE, EchoUpstream, asgi_post
from transports import edge
from transports.protocol import observe
from transports.runtime import get_core, reset_core


@pytest.fixture
def lines():
    """What the access logger writes, formatted like LOGGING's "json" formatter, as parsed lines."""
    assert django_settings.LOGGING["formatters"]["json"] == {"()": "gateway_project.logformat.JsonFormatter"}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("transports.access")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


@pytest.fixture
def world(db):
    reset_core()
    edge.credentials.clear()
    user = UserFactory(username="logged", is_staff=True)
    gateway = GatewayFactory(name="echo")
    ToolFactory(name="login", gateway=gateway)
    get_core().upstreams.override("echo", EchoUpstream())
    yield auth.token_issue(username=user.username)
    reset_core()


CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {
        "name": "login",
        "arguments": {"user": "ann", "password": "hunter2", "nested": [{"API_KEY": "k", "keep": 1}]},
    },
}


async def _session(token: str) -> str:
    _, headers, _ = await asgi_post(INITIALIZE, token=token)
    return headers["mcp-session-id"]


def test_off_by_default():
    assert django_settings.GATEWAY_ACCESS_LOG is False
    assert observe.access is None


@pytest.mark.django_db(transaction=True)
async def test_one_json_line_per_request_with_its_fields(world, settings, lines):
    """user, session, method, tool, gateway, duration_ms, outcome, transport; no arguments by default."""
    settings.GATEWAY_ACCESS_LOG = True
    session = await _session(world)
    await asgi_post(CALL, token=world, session=session)
    await asgi_post({"jsonrpc": "2.0", "id": 8, "method": "no/such"}, token=world, session=session)
    logged = lines()
    assert [line["method"] for line in logged] == ["tools/call", "no/such"]
    call = logged[0]
    assert call["level"] == "INFO"
    assert call["logger"] == "transports.access"
    assert call["time"]
    assert call["user"] == "logged"
    assert call["session"] == session
    assert (call["tool"], call["gateway"], call["outcome"]) == ("login", "echo", "ok")
    assert call["transport"] == "streamable-http"
    assert call["request_id"] == 7
    assert isinstance(call["duration_ms"], float)
    assert call["duration_ms"] >= 0
    assert "arguments" not in call
    assert "hunter2" not in json.dumps(logged)
    assert "trace_id" not in call
    assert logged[1]["outcome"] == "error"
    assert logged[1]["tool"] == ""


@pytest.mark.django_db(transaction=True)
async def test_arguments_are_logged_only_when_asked_and_redacted_at_any_depth(world, settings, lines):
    settings.GATEWAY_ACCESS_LOG = True
    settings.GATEWAY_LOG_ARGUMENTS = True
    settings.GATEWAY_LOG_REDACT = ["password", "api_key"]
    session = await _session(world)
    await asgi_post(CALL, token=world, session=session)
    (call,) = lines()
    assert call["arguments"] == {
        "user": "ann",
        "password": "(redacted)",
        "nested": [{"API_KEY": "(redacted)", "keep": 1}],
    }


@pytest.mark.django_db(transaction=True)
async def test_turning_it_off_again_logs_nothing(world, settings, lines):
    settings.GATEWAY_ACCESS_LOG = True
    settings.GATEWAY_ACCESS_LOG = False
    session = await _session(world)
    await asgi_post(CALL, token=world, session=session)
    assert observe.access is None
    assert lines() == []


def test_the_plain_format_is_the_default_and_json_is_chosen_by_the_setting():
    assert django_settings.LOGGING["handlers"]["console"]["formatter"] == (
        "json" if django_settings.GATEWAY_LOG_FORMAT == "json" else "plain"
    )
    assert django_settings.LOGGING["loggers"]["transports.access"]["level"] == "INFO"
