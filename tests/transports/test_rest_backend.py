"""REST tools called through the gateway (docs/tool-backends.md "REST" and "Results"): the response
as MCP content by content type, the arguments mapped onto the request, extraction and the output
schema, failures as ``isError`` with a bounded excerpt, timeouts and cancellation.

Spec: 2025-11-25 server/tools ("Tool Result": text, image and embedded-resource content,
structuredContent checked against outputSchema; "Error Handling": tool execution errors are
``isError`` results), basic/utilities/cancellation, basic/utilities/progress.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from asgiref.sync import sync_to_async

from tests.factories import ToolFactory
from tests.fixtures.http_api import BINARY, PNG, https_api  # noqa: F401
from tests.transports.rest_gateway import gateway, http_api, text_of, world  # noqa: F401
from transports.protocol.backends.rest import RestBackend
from transports.runtime import get_core

pytestmark = pytest.mark.django_db(transaction=True)

# -- content by type ----------------------------------------------------------------------------------


async def test_json_is_structured_content_plus_its_text_in_both_eras(gateway):  # noqa: F811
    """A JSON object is structuredContent and a text item holding the same JSON, in a 2025-11-25 session
    and in a stateless 2026-07-28 call."""
    await gateway.add_tool("items", {"url": gateway.api.url("/json")})
    for result in [await gateway.call("items"), (await gateway.test_call("items"))[0]]:
        assert result["structuredContent"]["count"] == 2
        assert json.loads(text_of(result)) == result["structuredContent"]
        assert not result.get("isError")


async def test_json_types_other_than_application_json_are_parsed(gateway):  # noqa: F811
    """``+json`` media types (here application/problem+json) are JSON too."""
    await gateway.add_tool("problem", {"url": gateway.api.url("/json/problem")})
    assert (await gateway.call("problem"))["structuredContent"] == {"title": "ok", "detail": "a +json type"}


async def test_json_that_is_not_an_object_is_text_only(gateway):  # noqa: F811
    """structuredContent is an object; a top-level array is given as its JSON text."""
    await gateway.add_tool("ids", {"url": gateway.api.url("/json/list")})
    result = await gateway.call("ids")
    assert text_of(result) == "[1,2]"
    assert "structuredContent" not in result


@pytest.mark.parametrize(("path", "text"), [("/text", "hello, text"), ("/xml", "<greeting>hello</greeting>")])
async def test_text_and_xml_are_one_text_item(gateway, path, text):  # noqa: F811
    await gateway.add_tool("t", {"url": gateway.api.url(path)})
    assert (await gateway.call("t"))["content"] == [{"type": "text", "text": text}]


async def test_an_image_is_an_image_item(gateway):  # noqa: F811
    await gateway.add_tool("picture", {"url": gateway.api.url("/image.png")})
    (item,) = (await gateway.call("picture"))["content"]
    assert item["type"] == "image"
    assert item["mimeType"] == "image/png"
    assert base64.b64decode(item["data"]) == PNG


async def test_other_binary_is_an_embedded_resource_with_a_blob(gateway):  # noqa: F811
    await gateway.add_tool("blob", {"url": gateway.api.url("/binary")})
    (item,) = (await gateway.call("blob"))["content"]
    assert item["type"] == "resource"
    assert item["resource"]["mimeType"] == "application/octet-stream"
    assert item["resource"]["uri"] == gateway.api.url("/binary")
    assert base64.b64decode(item["resource"]["blob"]) == BINARY


async def test_no_content_and_head_answer_a_short_status_text(gateway):  # noqa: F811
    await gateway.add_tool("nothing", {"url": gateway.api.url("/empty")})
    await gateway.add_tool("peek", {"url": gateway.api.url("/json"), "method": "HEAD"})
    assert text_of(await gateway.call("nothing")) == f"HTTP 204 No Content from GET {gateway.api.url('/empty')}"
    assert text_of(await gateway.call("peek")) == f"HTTP 200 OK from HEAD {gateway.api.url('/json')}"


# -- extraction and output schema ------------------------------------------------------------------------


async def test_extract_selects_part_of_the_response(gateway):  # noqa: F811
    await gateway.add_tool("first", {"url": gateway.api.url("/json"), "extract": "data.items[0]"})
    result = await gateway.call("first")
    assert result["structuredContent"] == {"id": 1, "title": "first", "tags": ["a"]}


async def test_an_extracted_list_is_wrapped_when_the_output_schema_asks_for_result(gateway):  # noqa: F811
    """A non-object value becomes {"result": value} when the tool's outputSchema declares `result`."""
    schema = {"type": "object", "properties": {"result": {"type": "array"}}, "required": ["result"]}
    await gateway.add_tool(
        "titles",
        {"url": gateway.api.url("/json"), "extract": "data.items[*].{id: id, title: title}"},
        output_schema=schema,
    )
    result = await gateway.call("titles")
    assert result["structuredContent"] == {"result": [{"id": 1, "title": "first"}, {"id": 2, "title": "second"}]}


async def test_a_response_that_breaks_the_output_schema_is_an_error_naming_the_field(gateway):  # noqa: F811
    schema = {"type": "object", "properties": {"count": {"type": "string"}}}
    await gateway.add_tool("items", {"url": gateway.api.url("/json")}, output_schema=schema)
    result = await gateway.call("items")
    assert result["isError"] is True
    assert "does not match the tool's output schema" in text_of(result)
    assert "/count" in text_of(result)


# -- arguments -> request ----------------------------------------------------------------------------------


async def test_get_arguments_fill_the_path_query_and_headers(gateway):  # noqa: F811
    """Template variables expand into the path (percent-encoded); a header param goes to its header;
    the rest of a GET's arguments become the query (lists repeated, booleans as JSON); static headers
    are sent."""
    config = {
        "url": gateway.api.url("/echo/users/{user_id}/posts{?limit}"),
        "headers": {"Accept": "application/json"},
        "params": {"trace": {"in": "header", "name": "X-Trace-Id"}, "search": {"in": "query", "name": "q"}},
    }
    await gateway.add_tool("posts", config)
    arguments = {"user_id": "a b/c", "limit": 5, "trace": "t-1", "search": "x y", "tags": ["a", "b"], "all": True}
    echo = (await gateway.call("posts", arguments))["structuredContent"]
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/users/a%20b%2Fc/posts"
    assert echo["query"] == [["limit", "5"], ["q", "x y"], ["tags", "a"], ["tags", "b"], ["all", "true"]]
    assert echo["headers"]["X-Trace-Id"] == "t-1"
    assert echo["headers"]["Accept"] == "application/json"
    assert echo["body"] == ""


async def test_post_arguments_become_a_json_body(gateway):  # noqa: F811
    """A POST's unlisted arguments are the JSON object body; path variables stay in the path; a param
    marked query goes to the query."""
    config = {
        "url": gateway.api.url("/echo/users/{user_id}"),
        "method": "POST",
        "params": {"dry_run": {"in": "query"}},
    }
    await gateway.add_tool("create", config)
    arguments = {"user_id": 7, "title": "hi", "count": 2, "meta": {"a": [1]}, "dry_run": False}
    echo = (await gateway.call("create", arguments))["structuredContent"]
    assert echo["path"] == "/echo/users/7"
    assert echo["query"] == [["dry_run", "false"]]
    assert echo["headers"]["Content-Type"] == "application/json"
    assert json.loads(echo["body"]) == {"title": "hi", "count": 2, "meta": {"a": [1]}}


async def test_a_form_body_is_url_encoded(gateway):  # noqa: F811
    config = {"url": gateway.api.url("/echo/form"), "method": "PUT", "body": {"encoding": "form"}}
    await gateway.add_tool("form", config)
    echo = (await gateway.call("form", {"title": "hello world", "n": 2, "tags": ["a", "b"]}))["structuredContent"]
    assert echo["method"] == "PUT"
    assert echo["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert echo["body"] == "title=hello+world&n=2&tags=a&tags=b"


async def test_a_raw_body_is_one_argument_sent_as_is(gateway):  # noqa: F811
    config = {
        "url": gateway.api.url("/echo/upload{?name}"),
        "method": "POST",
        "body": {"encoding": "raw", "argument": "csv", "content_type": "text/csv"},
    }
    await gateway.add_tool("upload", config)
    echo = (await gateway.call("upload", {"csv": "a,b\n1,2\n", "name": "data.csv"}))["structuredContent"]
    assert echo["headers"]["Content-Type"] == "text/csv"
    assert echo["body"] == "a,b\n1,2\n"
    assert echo["query"] == [["name", "data.csv"]]


async def test_a_json_body_argument_is_the_whole_body(gateway):  # noqa: F811
    """body.argument with json encoding sends that argument's value (here an array) as the body."""
    config = {"url": gateway.api.url("/echo/batch"), "method": "PATCH", "body": {"argument": "items"}}
    await gateway.add_tool("batch", config)
    echo = (await gateway.call("batch", {"items": [{"id": 1}, {"id": 2}]}))["structuredContent"]
    assert json.loads(echo["body"]) == [{"id": 1}, {"id": 2}]


async def test_a_header_argument_with_a_line_break_is_refused(gateway):  # noqa: F811
    config = {"url": gateway.api.url("/echo/x"), "params": {"trace": {"in": "header", "name": "X-Trace"}}}
    await gateway.add_tool("traced", config)
    result = await gateway.call("traced", {"trace": "a\r\nX-Admin: yes"})
    assert result["isError"] is True
    assert "cannot be sent in the X-Trace header" in text_of(result)


async def test_a_reserved_expansion_cannot_move_the_request_to_another_host(gateway):  # noqa: F811
    """{+path} keeps reserved characters; a value that would turn the host into user info ("@evil")
    is refused before anything is sent."""
    await gateway.add_tool("any", {"url": gateway.api.url("{+path}")})
    assert (await gateway.call("any", {"path": "/echo/ok"}))["structuredContent"]["path"] == "/echo/ok"
    result = await gateway.call("any", {"path": "@evil.example/steal"})
    assert result["isError"] is True
    assert "another host" in text_of(result)


# -- failures ----------------------------------------------------------------------------------------------


async def test_a_non_2xx_answer_is_an_error_with_status_method_url_and_a_bounded_excerpt(gateway):  # noqa: F811
    await gateway.add_tool("broken", {"url": gateway.api.url("/status/500{?repeat}")})
    result = await gateway.call("broken", {"repeat": 1000})
    text = text_of(result)
    assert result["isError"] is True
    assert text.startswith(f"HTTP 500 Internal Server Error from GET {gateway.api.url('/status/500?repeat=1000')}: ")
    assert "500 body: something went wrong." in text
    assert len(text) < 2300  # ~37 KB of body, quoted as about 2000 characters
    assert "more characters" in text


async def test_not_found_is_an_error(gateway):  # noqa: F811
    await gateway.add_tool("missing", {"url": gateway.api.url("/status/404")})
    result = await gateway.call("missing")
    assert result["isError"] is True
    assert text_of(result).startswith("HTTP 404 Not Found from GET")


async def test_the_tools_timeout_bounds_the_call(gateway):  # noqa: F811
    """A slow API: the call ends as an isError result naming the timeout, and the connection is closed
    (the server sees its client go)."""
    await gateway.add_tool("slow", {"url": gateway.api.url("/slow?seconds=60&key=timeout")}, timeout=0.5)
    result = await gateway.call("slow")
    assert result["isError"] is True
    assert "did not finish within 0.5 seconds (the tool's timeout)" in text_of(result)
    assert await asyncio.to_thread(gateway.api.state.wait, "slow-closed:timeout")


async def test_cancelling_a_slow_call_closes_its_request(gateway):  # noqa: F811
    """notifications/cancelled for an in-flight REST call cancels it, and its HTTP request is closed
    at once (the server sees the connection go, long before it would have answered)."""
    await gateway.add_tool("slow", {"url": gateway.api.url("/slow?seconds=60&key=cancel")})
    call = asyncio.create_task(gateway.answer("slow", request_id=41))
    assert await asyncio.to_thread(gateway.api.state.wait, "slow-started:cancel")
    await gateway.notify("notifications/cancelled", {"requestId": 41, "reason": "user pressed stop"})
    assert await asyncio.to_thread(gateway.api.state.wait, "slow-closed:cancel")
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)


# -- TLS -------------------------------------------------------------------------------------------------


async def test_tls_is_verified_against_the_tools_ca_bundle(gateway, https_api):  # noqa: F811
    """HTTPS to a server whose certificate a private CA signed: refused with the default trust store
    (the message says what to do), accepted with the CA as the tool's ca_bundle."""
    await gateway.add_tool("untrusted", {"url": https_api.https_url("/json")})
    await gateway.add_tool("trusted", {"url": https_api.https_url("/json"), "ca_bundle": https_api.ca_pem})
    result = await gateway.call("untrusted")
    assert result["isError"] is True
    assert "could not be verified" in text_of(result)
    assert "CA bundle" in text_of(result)
    assert (await gateway.call("trusted"))["structuredContent"]["count"] == 2


async def test_tls_verification_can_be_turned_off(gateway, https_api):  # noqa: F811
    await gateway.add_tool("insecure", {"url": https_api.https_url("/json"), "verify_tls": False})
    assert (await gateway.call("insecure"))["structuredContent"]["count"] == 2


# -- the backend -----------------------------------------------------------------------------------------


async def test_tools_share_one_connection_pool(gateway):  # noqa: F811
    """Every REST tool goes through the backend's one session (one pool, sized by the setting)."""
    await gateway.add_tool("a", {"url": gateway.api.url("/json")})
    await gateway.add_tool("b", {"url": gateway.api.url("/text")})
    await gateway.call("a")
    session = gateway.backend.session()
    await gateway.call("b")
    assert gateway.backend.session() is session
    assert session.connector is not None
    assert session.connector.limit == gateway.backend.max_connections


async def test_a_rest_tool_without_a_url_is_not_advertised(gateway):  # noqa: F811
    """available(tool) is false for a definition the registry would not have accepted (no url)."""
    await gateway.add_tool("listed", {"url": gateway.api.url("/json")})
    await sync_to_async(ToolFactory)(name="unlisted", integration_type="rest", gateway=None, backend_config={})
    get_core().catalog.invalidate()
    view = (await get_core().catalog.get()).catalog
    assert "listed" in view.tool_by_name
    assert "unlisted" not in view.tool_by_name


def test_the_backend_keeps_its_constructor_keywords():
    backend = RestBackend(allow_private=True, max_response_bytes=2048, max_redirects=1, max_connections=3)
    assert (backend.allow_private, backend.max_response_bytes, backend.max_redirects, backend.max_connections) == (
        True,
        2048,
        1,
        3,
    )
