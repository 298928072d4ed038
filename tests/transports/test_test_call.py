"""The test call: `POST /api/tools/{name}/call`, the admin's "Test call" page and `manage.py tool_call`
run one tool outside any session (the 2026-07-28 stateless path, progress asked for) and report its
result or JSON-RPC error, the notifications it sent (server/utilities/progress, server/utilities/logging)
and the elapsed time. Tools here are answered by an in-memory backend registered for their kind."""

from __future__ import annotations

import io

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client

from registry import auth
from registry.choices import IntegrationType
from tests.conftest import basic
from tests.factories import ToolFactory, UserFactory
from tests.fixtures.http_api import BEARER_TOKEN, http_api  # noqa: F401
from transports.protocol import jsonrpc
from transports.protocol.backends.memory import InMemoryBackend
from transports.protocol.jsonrpc import JsonRpcError
from transports.runtime import get_core, reset_core

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 3}},
    "required": ["city", "days"],
}


def forecast(arguments, context):
    return {"content": [{"type": "text", "text": f"sunny in {arguments['city']}"}], "structuredContent": {"ok": True}}


async def noisy(arguments, context):
    await context.progress(1, 2, "half way")
    await context.log("info", {"step": "fetched"})
    await context.progress(2, 2)
    return {"content": [{"type": "text", "text": "done"}]}


def broken(arguments, context):
    return {"content": [{"type": "text", "text": "upstream said 503"}], "isError": True}


def refusing(arguments, context):
    raise JsonRpcError(jsonrpc.INVALID_PARAMS, "Invalid params: the city is not served.")


HANDLERS = {"forecast": forecast, "noisy": noisy, "broken": broken, "refusing": refusing, "off": forecast}


def _close_connection() -> None:
    from django.db import connection

    connection.close()


@pytest.fixture
async def _close_worker_connections():
    """The API checks credentials in a worker thread: close its connection (PostgreSQL drops the test DB)."""
    yield
    await sync_to_async(_close_connection)()


@pytest.fixture
def tools(transactional_db, _close_worker_connections):
    """Function tools answered in memory, one disabled, and a CLI tool no backend serves."""
    reset_core()
    UserFactory(username="staff", is_staff=True)
    UserFactory(username="reader")
    for name in HANDLERS:
        ToolFactory(
            name=name,
            integration_type=IntegrationType.FUNCTION,
            gateway=None,
            input_schema=SCHEMA,
            enabled=name != "off",
        )
    ToolFactory(name="unserved", integration_type=IntegrationType.CLI, gateway=None)
    backend = InMemoryBackend(HANDLERS)
    core = get_core()
    core.backends.register(IntegrationType.FUNCTION, backend)
    core.backends.unregister(IntegrationType.CLI)
    yield backend
    reset_core()


def as_user(username: str = "staff") -> dict[str, str]:
    return {"Authorization": basic(username)}


async def call(name: str, body: dict | None = None, headers: dict[str, str] | None = None):
    """POST the test call (AsyncClient drops headers given to its constructor: they go per request)."""
    headers = as_user() if headers is None else headers
    return await AsyncClient().post(
        f"/api/tools/{name}/call", body or {}, content_type="application/json", headers=headers
    )


# ---------------------------------------------------------------------------------------------
# POST /api/tools/{name}/call
# ---------------------------------------------------------------------------------------------


async def test_a_test_call_answers_the_result_and_the_time_it_took(tools):
    """200 with the CallToolResult, no notifications, and elapsed_ms; no `error` key."""
    response = await call("forecast", {"arguments": {"city": "Oslo", "days": 2}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"result", "notifications", "elapsed_ms"}
    assert body["result"]["content"] == [{"type": "text", "text": "sunny in Oslo"}]
    assert body["result"]["structuredContent"] == {"ok": True}
    assert body["notifications"] == []
    assert isinstance(body["elapsed_ms"], int | float)
    assert body["elapsed_ms"] >= 0
    assert tools.calls == [("forecast", {"city": "Oslo", "days": 2})]


async def test_a_tool_that_fails_answers_its_is_error_result(tools):
    """A tool that ran and failed is still a result (server/tools "Error Handling": isError: true)."""
    body = (await call("broken", {"arguments": {"city": "Oslo", "days": 1}})).json()
    assert body["result"]["isError"] is True
    assert body["result"]["content"][0]["text"] == "upstream said 503"


async def test_arguments_that_fail_the_schema_are_a_tool_error_and_never_reach_the_tool(tools):
    """The gateway checks arguments first (SEP-1303, 2025-11-25 on: an isError result naming the field)."""
    body = (await call("forecast", {"arguments": {"days": "x"}})).json()
    assert body["result"]["isError"] is True
    assert "city" in body["result"]["content"][0]["text"]
    assert tools.calls == []


async def test_a_protocol_error_is_answered_as_error(tools):
    """A call the backend refuses as a JSON-RPC error comes back as `error`, with no `result`."""
    body = (await call("refusing", {"arguments": {"city": "Atlantis", "days": 1}})).json()
    assert "result" not in body
    assert body["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert "not served" in body["error"]["message"]
    assert "elapsed_ms" in body


async def test_progress_and_log_messages_are_reported_in_order(tools):
    """What the tool sent on the way (notifications/progress with the call's token, notifications/message)."""
    body = (await call("noisy", {"arguments": {"city": "Oslo", "days": 1}})).json()
    assert [note["method"] for note in body["notifications"]] == [
        "notifications/progress",
        "notifications/message",
        "notifications/progress",
    ]
    first = body["notifications"][0]["params"]
    assert (first["progress"], first["total"], first["message"]) == (1, 2, "half way")
    assert body["notifications"][1]["params"] == {"level": "info", "data": {"step": "fetched"}}
    assert body["result"]["content"][0]["text"] == "done"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "No tool named 'nope'."),
        ("off", "Tool 'off' is disabled; enable it to call it."),
        ("unserved", "cannot be served by this gateway"),
    ],
)
async def test_unknown_disabled_and_unserved_tools_are_404_saying_which(tools, name, message):
    response = await call(name, {"arguments": {}})
    assert response.status_code == 404
    assert message in response.json()["detail"]
    assert tools.calls == []


async def test_the_call_scope_is_needed(tools):
    """No credentials: 401; a token without `call`: 403; a plain user (read, call): allowed."""
    assert (await call("forecast", headers={})).status_code == 401
    token = await sync_to_async(auth.token_issue)(username="staff", scopes=["read", "write"])
    refused = await call("forecast", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    assert "'call'" in refused.json()["detail"]
    allowed = await call("forecast", {"arguments": {"city": "Oslo", "days": 1}}, headers=as_user("reader"))
    assert allowed.status_code == 200


async def test_a_malformed_body_is_422(tools):
    response = await call("forecast", {"arguments": ["city"]})
    assert response.status_code == 422
    assert "arguments" in response.json()["detail"]
    response = await call("forecast", {"argumentz": {}})
    assert response.status_code == 422


# ---------------------------------------------------------------------------------------------
# The admin's "Test call" page
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(tools, admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


def page(name: str) -> str:
    from registry.models import Tool

    return f"/admin/registry/tool/{Tool.objects.get(name=name).pk}/test-call/"


def test_the_admin_page_starts_from_the_required_arguments(admin_client):
    """GET: a field per argument of the input schema, the required ones prefilled (defaults where the schema
    has them), and the JSON box empty."""
    response = admin_client.get(page("forecast"))
    assert response.status_code == 200
    form = response.context["form"]
    assert (form["arg_city"].value(), form["arg_days"].value()) == ("", 3)
    assert form["arguments"].value() in (None, "")
    html = response.content.decode()
    assert "Test call: forecast" in html
    assert 'id="argument-fields"' in html


def test_the_admin_page_calls_with_the_fields_typed_as_the_schema_says(admin_client, tools):
    """The fields become the arguments, converted to the schema's types; empty optional ones are left out."""
    response = admin_client.post(page("noisy"), {"arg_city": "Oslo", "arg_days": "2"})
    assert response.status_code == 200, response.context["form"].errors
    assert tools.calls == [("noisy", {"city": "Oslo", "days": 2})]


def test_the_result_shows_images_and_audio_as_media_and_links_as_links():
    from transports.admin_views import _content

    assert _content({"type": "image", "data": "AAA=", "mimeType": "image/png"}) == {
        "type": "image",
        "src": "data:image/png;base64,AAA=",
        "mime": "image/png",
    }
    assert _content({"type": "audio", "data": "AAA=", "mimeType": "audio/wav"})["src"] == "data:audio/wav;base64,AAA="
    assert _content({"type": "image", "data": "AAA=", "mimeType": 'x"onerror="'})["type"] == "text"  # no odd types
    assert _content({"type": "resource_link", "uri": "file:///a", "name": "a"}) == {
        "type": "link",
        "uri": "file:///a",
        "name": "a",
    }
    assert _content({"type": "text", "text": "hi"}) == {"type": "text", "text": "hi"}


def test_the_admin_page_runs_the_call_and_shows_result_notifications_and_time(admin_client, tools):
    response = admin_client.post(page("noisy"), {"arguments": '{"city": "Oslo", "days": 1}'})
    assert response.status_code == 200
    html = response.content.decode()
    report = response.context["report"]
    assert report.result["content"][0]["text"] == "done"
    assert f'<span id="elapsed">{report.elapsed_ms}</span> ms' in html
    assert "call-ok" in html
    assert html.count("<code>notifications/progress</code>") == 2
    assert "<code>notifications/message</code>" in html
    assert tools.calls == [("noisy", {"city": "Oslo", "days": 1})]


def test_the_admin_page_highlights_a_failed_call(admin_client):
    html = admin_client.post(page("broken"), {"arguments": '{"city": "Oslo", "days": 1}'}).content.decode()
    assert "The tool reported an error (isError)" in html
    assert "call-failed" in html
    assert "upstream said 503" in html


def test_the_admin_page_refuses_arguments_that_are_not_a_json_object(admin_client, tools):
    for bad in ('{"city": ', '["Oslo"]'):
        response = admin_client.post(page("forecast"), {"arguments": bad})
        assert response.status_code == 200
        assert "arguments" in response.context["form"].errors
    assert tools.calls == []


def test_the_admin_page_says_why_a_disabled_tool_cannot_be_called(admin_client):
    response = admin_client.post(page("off"), {"arguments": "{}"})
    assert "Tool &#x27;off&#x27; is disabled" in response.content.decode()


def test_the_admin_page_needs_the_right_to_change_tools(tools):
    """Anonymous: to the login page; staff without registry.change_tool: 403; with it: the page."""
    assert Client().get(page("forecast")).status_code == 302
    staff = UserFactory(username="viewer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_tool"))
    client = Client()
    client.force_login(staff)
    assert client.get(page("forecast")).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="change_tool"))
    client.force_login(UserFactory(username="viewer"))
    assert client.get(page("forecast")).status_code == 200
    assert client.get("/admin/registry/tool/999999/test-call/").status_code == 404


# ---------------------------------------------------------------------------------------------
# manage.py tool_call
# ---------------------------------------------------------------------------------------------


def test_the_command_prints_the_result_notifications_and_time(tools):
    out = io.StringIO()
    call_command("tool_call", "noisy", "--arguments", '{"city": "Oslo", "days": 1}', stdout=out)
    text = out.getvalue()
    assert "notifications/progress: " in text
    assert '"text": "done"' in text
    assert "Elapsed: " in text


def test_the_command_exits_with_an_error_when_the_tool_fails_or_is_unknown(tools):
    with pytest.raises(CommandError, match=r"isError") as failed:
        call_command("tool_call", "broken", "--arguments", '{"city": "Oslo", "days": 1}', stdout=io.StringIO())
    assert failed.value.returncode == 1
    with pytest.raises(CommandError, match="refused"):
        call_command("tool_call", "refusing", "--arguments", '{"city": "X", "days": 1}', stdout=io.StringIO())
    with pytest.raises(CommandError, match="No tool named 'nope'"):
        call_command("tool_call", "nope")
    with pytest.raises(CommandError, match="--arguments is not JSON"):
        call_command("tool_call", "forecast", "--arguments", "{")


# ---------------------------------------------------------------------------------------------
# A real REST tool, from its creation over the API to its test call
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def rest_world(transactional_db, _close_worker_connections):
    reset_core()
    UserFactory(username="staff", is_staff=True)
    yield
    reset_core()


async def test_a_rest_tool_made_over_the_api_answers_its_test_call_with_its_stored_secret(rest_world, http_api):  # noqa: F811
    """Created with write-only credentials, the tool authenticates to the real HTTP API; with a wrong
    token it answers isError with the status, and the report still carries the time it took."""
    client = AsyncClient()
    tool = {
        "name": "whoami",
        "integration_type": "rest",
        "input_schema": {"type": "object", "properties": {}},
        "backend_config": {"url": http_api.url("/auth/bearer"), "auth": {"type": "bearer"}},
        "credentials": {"token": BEARER_TOKEN},
    }
    created = await client.post("/api/tools", tool, content_type="application/json", headers=as_user())
    assert created.status_code == 201, created.content
    body = (await call("whoami")).json()
    assert body["result"]["structuredContent"] == {"bearer": True}
    assert body["elapsed_ms"] >= 0

    pk = created.json()["id"]
    changed = await client.patch(
        f"/api/tools/{pk}", {"credentials": {"token": "wrong"}}, content_type="application/json", headers=as_user()
    )
    assert changed.status_code == 200
    refused = (await call("whoami")).json()
    assert refused["result"]["isError"] is True
    assert "401" in refused["result"]["content"][0]["text"]
    await get_core().backends.get(IntegrationType.REST).aclose()


def test_the_command_calls_a_rest_tool(rest_world, http_api):  # noqa: F811
    out = io.StringIO()
    ToolFactory(
        name="items",
        integration_type=IntegrationType.REST,
        gateway=None,
        input_schema={"type": "object", "properties": {}},
        backend_config={"url": http_api.url("/json"), "extract": "data.items[*].title"},
    )
    call_command("tool_call", "items", stdout=out)
    assert '"text": "[\\"first\\",\\"second\\"]"' in out.getvalue()  # the extracted titles, as JSON text
