"""The tool playground streams a call as it runs. Its script posts the "Test call" form with
`Accept: text/event-stream`; the page answers with server-sent events: `progress` and `log` as the tool
sends them (not after the call), then `result` (the report's HTML), or one `error` event a person can
read when the call cannot start. Without that header the same POST answers the full page. A browser that
goes away cancels the call, which reaches the backend as asyncio.CancelledError. The page stays
staff-only, and CSRF holds on the streaming POST too.

Tools here are answered by an in-memory backend registered for their kind (as in test_test_call.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, Client

from registry.choices import IntegrationType
from tests.factories import ToolFactory, UserFactory
from transports import admin_views
from transports.admin_views import _content, sse_event
from transports.protocol.backends.memory import InMemoryBackend
from transports.runtime import get_core, reset_core

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 3}},
    "required": ["city"],
}
ARGUMENTS = {"arguments": '{"city": "Oslo", "days": 1}'}
STREAM = {"Accept": "text/event-stream"}


@dataclass
class Tools:
    """The in-memory tools' shared state: the gate the gated tool waits at, and what happened to the call
    that never ends."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    stuck_started: asyncio.Event = field(default_factory=asyncio.Event)
    stuck_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    stuck_finished_normally: bool = False

    async def noisy(self, arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        await context.progress(1, 3, "fetched")
        await context.log("info", {"step": "parsed"})
        await context.progress(2, 3, "parsed")
        await context.progress(3, 3)
        return {"content": [{"type": "text", "text": f"done in {arguments['city']}"}], "structuredContent": {"ok": 1}}

    async def gated(self, arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        await context.progress(1, 2, "waiting at the gate")
        await self.gate.wait()  # opened by the test once it has seen the first progress event
        await context.progress(2, 2, "through")
        return {"content": [{"type": "text", "text": "passed"}]}

    async def stuck(self, arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        await context.progress(0, 1, "started, never ends")
        self.stuck_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stuck_cancelled.set()
            raise
        self.stuck_finished_normally = True
        return {"content": []}

    @staticmethod
    def broken(arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "upstream said 503"}], "isError": True}


@pytest.fixture
def tools(transactional_db):
    reset_core()
    state = Tools()
    handlers = {"noisy": state.noisy, "gated": state.gated, "stuck": state.stuck, "broken": state.broken}
    for name in [*handlers, "off"]:
        ToolFactory(
            name=name,
            integration_type=IntegrationType.FUNCTION,
            gateway=None,
            input_schema=SCHEMA,
            enabled=name != "off",
        )
    core = get_core()
    core.backends.register(IntegrationType.FUNCTION, InMemoryBackend({**handlers, "off": state.noisy}))
    yield state
    reset_core()


def page(name: str) -> str:
    from registry.models import Tool

    return f"/admin/registry/tool/{Tool.objects.get(name=name).pk}/test-call/"


apage = sync_to_async(page)


@pytest.fixture
async def staff_client(tools, admin_user) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(admin_user)
    return client


def parse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream (comments skipped, data lines joined)."""
    events = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append((name, "\n".join(data)))
    return events


async def read_events(response) -> list[tuple[str, str]]:
    if not response.streaming:
        return parse_events(response.content.decode())
    chunks = [chunk.decode() if isinstance(chunk, bytes) else chunk async for chunk in response.streaming_content]
    return parse_events("".join(chunks))


# ---------------------------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------------------------


async def test_the_stream_sends_progress_and_logs_in_order_then_the_result(staff_client, tools):
    """Each notification becomes an event in the order the tool sent it; `result` comes last, carrying the
    report's HTML (the same fragment the plain page includes)."""
    response = await staff_client.post(await apage("noisy"), ARGUMENTS, headers=STREAM)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["X-Accel-Buffering"] == "no"  # nginx and friends pass events on at once
    assert "no-cache" in response["Cache-Control"]
    events = await read_events(response)
    assert [name for name, _ in events] == ["progress", "log", "progress", "progress", "result"]
    progress = [json.loads(data) for name, data in events if name == "progress"]
    assert progress == [
        {"progress": 1, "total": 3, "message": "fetched"},
        {"progress": 2, "total": 3, "message": "parsed"},
        {"progress": 3, "total": 3, "message": None},
    ]
    assert json.loads(events[1][1]) == {"level": "info", "data": {"step": "parsed"}, "logger": None}
    html = events[-1][1]
    assert 'id="call-result"' in html
    assert "done in Oslo" in html
    assert 'id="structured-content"' in html
    assert html.count("<code>notifications/progress</code>") == 3  # the report lists them as well


async def test_progress_arrives_while_the_call_is_still_running(staff_client, tools):
    """The first progress event reaches the browser while the tool waits: the tool only goes on once the
    test has read that event (were events held until the call ended, this would time out)."""
    response = await staff_client.post(await apage("gated"), ARGUMENTS, headers=STREAM)
    seen: list[str] = []
    text = ""
    async with asyncio.timeout(10):
        async for chunk in response.streaming_content:
            text += chunk.decode() if isinstance(chunk, bytes) else chunk
            seen = [name for name, _ in parse_events(text)]
            if seen == ["progress"]:
                assert not tools.gate.is_set()
                tools.gate.set()
    assert seen == ["progress", "progress", "result"]
    assert "passed" in parse_events(text)[-1][1]


async def test_a_quiet_call_keeps_the_stream_alive_with_comments(staff_client, tools, monkeypatch):
    """While the tool sends nothing, a comment line goes out now and then (proxies drop idle streams);
    the browser's parser skips it."""
    monkeypatch.setattr(admin_views, "KEEPALIVE_SECONDS", 0.05)
    response = await staff_client.post(await apage("gated"), ARGUMENTS, headers=STREAM)
    text = ""
    async with asyncio.timeout(10):
        async for chunk in response.streaming_content:
            text += chunk.decode() if isinstance(chunk, bytes) else chunk
            if ": still running\n\n" in text:
                tools.gate.set()
    assert text.startswith(": the call has started\n\n")
    assert [name for name, _ in parse_events(text)] == ["progress", "progress", "result"]


async def test_an_unexpected_failure_is_a_message_in_both_modes(staff_client, tools, monkeypatch):
    """A bug below the page (here: the call itself raising) is reported, never a 500 or a stream that
    never ends."""

    async def failing(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(admin_views, "tool_call", failing)
    events = await read_events(await staff_client.post(await apage("noisy"), ARGUMENTS, headers=STREAM))
    assert events == [("error", json.dumps({"message": admin_views.FAILED, "fields": {}}))]
    response = await staff_client.post(await apage("noisy"), ARGUMENTS)
    assert response.status_code == 200
    assert admin_views.FAILED in response.content.decode()


async def test_a_tool_error_comes_back_as_a_result_marked_is_error(staff_client, tools):
    events = await read_events(await staff_client.post(await apage("broken"), ARGUMENTS, headers=STREAM))
    assert [name for name, _ in events] == ["result"]
    html = events[0][1]
    assert "The tool reported an error (isError)" in html
    assert "<code>isError: true</code>" in html
    assert 'data-failed="true"' in html


async def test_without_the_accept_header_the_post_answers_the_full_page(staff_client, tools):
    """No JavaScript: the plain form post renders the whole page with the report, as before."""
    response = await staff_client.post(await apage("noisy"), ARGUMENTS)
    assert response.status_code == 200
    assert not response.streaming
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "<html" in html
    assert "Test call: noisy" in html
    assert 'id="call-result"' in html
    assert "transports/playground.js" in html  # the script that streams, when there is JavaScript
    assert 'id="call-progress"' in html


# ---------------------------------------------------------------------------------------------
# Errors: one readable `error` event, never a 500
# ---------------------------------------------------------------------------------------------


async def test_bad_arguments_answer_one_error_event_naming_the_field(staff_client, tools):
    response = await staff_client.post(await apage("noisy"), {"arg_days": "many"}, headers=STREAM)
    assert response.status_code == 400
    [(name, data)] = await read_events(response)
    error = json.loads(data)
    assert name == "error"
    assert "days: Enter a whole number." in error["message"]
    assert error["fields"] == {"id_arg_days": ["Enter a whole number."]}
    response = await staff_client.post(await apage("noisy"), {"arguments": '{"city": '}, headers=STREAM)
    [(name, data)] = await read_events(response)
    assert "Arguments as JSON: Not JSON" in json.loads(data)["message"]


async def test_a_tool_that_cannot_be_called_answers_an_error_event_saying_why(staff_client, tools):
    response = await staff_client.post(await apage("off"), ARGUMENTS, headers=STREAM)
    assert response.status_code == 200
    assert await read_events(response) == [
        ("error", json.dumps({"message": "Tool 'off' is disabled; enable it to call it.", "fields": {}}))
    ]


async def test_an_unknown_tool_answers_404_with_an_error_event(staff_client, tools):
    response = await staff_client.post("/admin/registry/tool/999999/test-call/", ARGUMENTS, headers=STREAM)
    assert response.status_code == 404
    [(name, data)] = await read_events(response)
    assert name == "error"
    assert json.loads(data)["message"] == "No tool with id 999999."


async def test_staff_without_the_right_to_change_tools_get_403_with_an_error_event(tools):
    staff = await sync_to_async(UserFactory)(username="viewer", is_staff=True)
    view_tool = await Permission.objects.aget(codename="view_tool")
    await staff.user_permissions.aadd(view_tool)
    client = AsyncClient()
    await client.aforce_login(staff)
    response = await client.post(await apage("noisy"), ARGUMENTS, headers=STREAM)
    assert response.status_code == 403
    [(name, data)] = await read_events(response)
    assert name == "error"
    assert "registry.change_tool" in json.loads(data)["message"]
    assert (await client.post(await apage("noisy"), ARGUMENTS)).status_code == 403  # the plain page too


async def test_anonymous_and_non_staff_users_are_sent_to_the_login(tools):
    """The streaming POST is the same page: no call for anyone who is not staff."""
    plain = await sync_to_async(UserFactory)(username="plain", is_staff=False)
    signed_in = AsyncClient()
    await signed_in.aforce_login(plain)
    for client in (AsyncClient(), signed_in):
        response = await client.post(await apage("stuck"), ARGUMENTS, headers=STREAM)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert not tools.stuck_started.is_set()


def test_the_streaming_post_holds_csrf(tools, admin_user):
    """Without the token: 403 before anything runs; with the page's token the stream answers."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    url = page("noisy")
    assert client.post(url, ARGUMENTS, headers=STREAM).status_code == 403
    token = client.get(url).context["csrf_token"]
    response = client.post(url, {**ARGUMENTS, "csrfmiddlewaretoken": str(token)}, headers=STREAM)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    response.close()  # not read: the call never starts


# ---------------------------------------------------------------------------------------------
# A browser that goes away cancels the call (Django's ASGI handler, as daphne runs it)
# ---------------------------------------------------------------------------------------------

CSRF_SECRET = "a" * 16 + "B" * 16  # a csrftoken cookie's secret, sent back in the form as it is


async def test_a_client_that_disconnects_cancels_the_call_and_leaves_nothing_running(tools, admin_user):
    """The browser reads the first progress event and goes away (http.disconnect): the backend's call sees
    asyncio.CancelledError, no result is sent, and no task of the call is left behind."""
    login = Client()
    await sync_to_async(login.force_login)(admin_user)
    session = login.cookies["sessionid"].value
    body = urlencode({**ARGUMENTS, "csrfmiddlewaretoken": CSRF_SECRET}).encode()
    url = await apage("stuck")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"accept", b"text/event-stream"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"cookie", f"sessionid={session}; csrftoken={CSRF_SECRET}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "http.request", "body": body, "more_body": False})
    sent: list[dict[str, Any]] = []
    progress_seen = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if b"event: progress" in message.get("body", b""):
            progress_seen.set()

    app = asyncio.create_task(ASGIHandler()(scope, inbox.get, send))
    async with asyncio.timeout(10):
        await progress_seen.wait()
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    await inbox.put({"type": "http.disconnect"})
    # asyncio.wait, not a timeout: cancelling a test that awaits the app would cancel the app, and so the
    # call, which is what this test must see the page do on its own.
    done, _ = await asyncio.wait({app}, timeout=5)
    if app not in done:
        app.cancel()
        pytest.fail("the page went on after the client disconnected")
    cancelled = asyncio.ensure_future(tools.stuck_cancelled.wait())
    done, _ = await asyncio.wait({cancelled}, timeout=5)
    assert cancelled in done, "the backend's call was not cancelled"
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("test call ")]
    assert not tools.stuck_finished_normally
    assert not any(b"event: result" in message.get("body", b"") for message in sent)


# ---------------------------------------------------------------------------------------------
# The form made from the input schema, and the result's content
# ---------------------------------------------------------------------------------------------


def test_the_form_follows_the_schema_enums_required_nested_refs_and_nullables():
    """Enums (also through $ref into $defs) are selects, integers numbers, nullable types their base type,
    objects and arrays JSON fields saying so; required ones are marked for people and screen readers."""
    schema = {
        "type": "object",
        "$defs": {"Unit": {"enum": ["metric", "imperial"], "type": "string"}},
        "properties": {
            "city": {"type": "string", "description": "Where."},
            "unit": {"$ref": "#/$defs/Unit", "default": "metric"},
            "mode": {"enum": ["fast", "slow"]},
            "days": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "limit": {"type": ["number", "null"]},
            "filters": {"type": "object"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "filters"],
    }
    form = admin_views.TestCallForm(schema=schema)
    html = {name: str(form["arg_" + name]) for name in schema["properties"]}
    assert "<select" in html["unit"]
    assert '<option value="&quot;imperial&quot;">imperial</option>' in html["unit"]
    assert 'Default: "metric".' in form["arg_unit"].help_text
    assert "<select" in html["mode"]
    assert 'type="number"' in html["days"]
    assert 'type="number"' in html["limit"]
    assert "<textarea" in html["filters"]
    assert "As JSON: a JSON object" in form["arg_filters"].help_text
    assert "As JSON: a JSON array" in form["arg_tags"].help_text
    assert 'aria-required="true"' in html["city"]
    assert 'aria-required="true"' in html["filters"]
    assert "aria-required" not in html["tags"]
    assert [(a["field"].label, a["required"]) for a in form.argument_fields()][:2] == [
        ("city (required)", True),
        ("unit", False),
    ]
    bound = admin_views.TestCallForm(
        {"arg_city": "Oslo", "arg_unit": '"imperial"', "arg_filters": '{"a": 1}', "arg_days": "2"}, schema=schema
    )
    assert bound.is_valid(), bound.errors
    assert bound.call_arguments() == {"city": "Oslo", "unit": "imperial", "filters": {"a": 1}, "days": 2}


def test_the_page_marks_required_labels_and_ties_help_to_its_field(staff_client_sync):
    html = staff_client_sync.get(page("noisy")).content.decode()
    assert '<label for="id_arg_city" class="required">city (required):</label>' in html
    assert 'aria-describedby="id_arg_days_helptext"' in html
    assert 'id="id_arg_days_helptext"' in html
    assert '<progress id="call-progress"' in html
    assert 'role="status" aria-live="polite"' in html
    assert 'role="alert"' in html


@pytest.fixture
def staff_client_sync(tools, admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_resource_links_link_and_embedded_resources_show(staff_client_sync):
    assert _content(
        {"type": "resource_link", "uri": "https://example.com/a", "name": "a", "mimeType": "text/html"}
    ) == {
        "type": "link",
        "uri": "https://example.com/a",
        "name": "a",
        "href": "https://example.com/a",
        "mime": "text/html",
    }
    assert "href" not in _content({"type": "resource_link", "uri": "javascript:alert(1)", "name": "x"})
    text = _content({"type": "resource", "resource": {"uri": "file:///a.txt", "mimeType": "text/plain", "text": "hi"}})
    assert text == {"type": "resource", "uri": "file:///a.txt", "mime": "text/plain", "text": "hi"}
    image = _content(
        {"type": "resource", "resource": {"uri": "file:///p.png", "mimeType": "image/png", "blob": "AAAA"}}
    )
    assert (image["media"], image["src"], image["size"]) == ("image", "data:image/png;base64,AAAA", 3)
    odd = _content({"type": "resource", "resource": {"uri": "x:/b", "mimeType": 'a"b/c', "blob": "AA=="}})
    assert (odd["media"], odd["src"], odd["size"], odd["filename"]) == (
        "",
        "data:application/octet-stream;base64,AA==",
        1,
        "b",
    )


async def test_the_result_renders_links_resources_and_audio(staff_client, tools):
    """Through the page: a web link is a link, any link can be looked up in the catalog, an embedded image
    is shown, audio gets a player."""

    async def media(arguments: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "content": [
                {"type": "resource_link", "uri": "https://example.com/doc", "name": "doc", "description": "A doc."},
                {"type": "resource_link", "uri": "file:///etc/motd", "name": "motd"},
                {"type": "resource", "resource": {"uri": "file:///p.png", "mimeType": "image/png", "blob": "AAAA"}},
                {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
            ]
        }

    get_core().backends.get(IntegrationType.FUNCTION).handlers["noisy"] = media
    [(name, html)] = await read_events(await staff_client.post(await apage("noisy"), ARGUMENTS, headers=STREAM))
    assert name == "result"
    assert '<a href="https://example.com/doc" rel="noopener noreferrer">doc</a>' in html
    assert "/admin/registry/resource/?q=file%3A%2F%2F%2Fetc%2Fmotd" in html
    assert '<img src="data:image/png;base64,AAAA"' in html
    assert '<audio controls src="data:audio/wav;base64,AAAA"' in html


def test_an_event_with_several_lines_keeps_them_all():
    assert sse_event("result", "a\nb\r\nc") == "event: result\ndata: a\ndata: b\ndata: c\n\n"
