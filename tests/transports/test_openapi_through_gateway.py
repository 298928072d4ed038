"""An OpenAPI 3.1 document, imported and called through a live gateway.

tests/fixtures/openapi/library.yaml describes the tests' HTTP API (tests/fixtures/http_api.py): its schemas
have $ref chains, a cycle (a category tree), oneOf and anyOf, and its operations path, query and header
parameters, a JSON body, an object response and a bearer-protected endpoint. It is imported with the
registry's service (registry.openapi.openapi_import) into a gateway (daphne, its own database) as the tools of
the virtual server 'library', then called by the official `mcp` SDK client in a session (2025-11-25) and in
the stateless 2026-07-28 mode, and over `POST /servers/library/rpc`.

Spec: MCP 2025-11-25 and 2026-07-28 server/tools (inputSchema, outputSchema, structuredContent, isError for
arguments that break the schema, SEP-1303); OpenAPI 3.1.0 Parameter, Request Body and Security Scheme objects.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.fixtures.http_api import BEARER_TOKEN, ITEMS, start_http_api
from tests.live_gateway import start_live_gateway

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "library.yaml"
SOURCE = "tests/fixtures/openapi/library.yaml"
TOOLS = {"listItems", "createBook", "getBook", "searchBooks", "whoAmI"}
MODES = ["legacy", "2026-07-28"]
BOOK = {
    "title": "Dune",
    "price": "free",
    "format": {"kind": "paperback", "pages": 412},
    "category": {"name": "fiction", "children": [{"name": "sf", "children": [{"name": "desert planets"}]}]},
}


def import_document(gateway, base_url: str) -> dict:
    """Run the import service in the gateway's own environment (its database), as the entry points do."""
    code = (
        "import json\n"
        "from registry.openapi import openapi_import\n"
        f"report = openapi_import(document=open({str(FIXTURE)!r}, 'rb').read(), source={SOURCE!r}, "
        f"server='library', base_url={base_url!r}, credentials={{'bearerAuth': {{'token': {BEARER_TOKEN!r}}}}})\n"
        "print(json.dumps(report.as_dict()))\n"
    )
    return json.loads(gateway.manage("shell", "-c", code).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The HTTP API and a gateway (private addresses allowed: the API is on loopback) with the document imported."""
    api = start_http_api()
    try:
        with start_live_gateway(tmp_path_factory.mktemp("openapi"), GATEWAY_OUTBOUND_ALLOW_PRIVATE="true") as gateway:
            report = import_document(gateway, api.base_url)
            assert set(report["added"]) == TOOLS, report
            assert report["server_created"]
            assert (report["conflicts"], report["warnings"]) == ([], [])
            yield gateway
    finally:
        api.stop()


def lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def sdk(gateway, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    return Client(streamable_http_client(gateway.mcp_url("library"), http_client=http), mode=mode)


@pytest.mark.parametrize("mode", MODES)
async def test_the_imported_operations_are_listed_with_their_schemas(library, mode):
    """tools/list: one tool per operation; the body's oneOf/anyOf and the category cycle ($defs) are in the input
    schema, and the object response is the output schema."""
    async with sdk(library, mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    create = tools["createBook"].input_schema
    assert set(create["properties"]) == {"title", "price", "format", "category"}
    assert len(create["properties"]["format"]["oneOf"]) == 2
    assert len(create["properties"]["price"]["anyOf"]) == 2
    assert create["$defs"]["Category"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Category"}
    assert tools["getBook"].input_schema["required"] == ["bookId"]
    assert tools["listItems"].output_schema["required"] == ["data", "count"]
    assert tools["getBook"].annotations.read_only_hint is True


@pytest.mark.parametrize("mode", MODES)
async def test_path_query_and_header_arguments_reach_the_api(library, mode):
    """The path parameter fills the URL template, the header parameter is sent as a header, query parameters
    as the query string (the API echoes what it received, as the document's Exchange schema says)."""
    async with sdk(library, mode) as client:
        book = await client.call_tool("getBook", {"bookId": 42, "X-Request-Id": f"trace-{mode}"})
        search = await client.call_tool("searchBooks", {"q": "dune", "limit": 5, "sort": "year"})
    assert not book.is_error, book
    assert book.structured_content["method"] == "GET"
    assert book.structured_content["path"] == "/echo/books/42"
    assert lower_keys(book.structured_content["headers"])["x-request-id"] == f"trace-{mode}"  # names are case-blind
    assert json.loads(book.content[0].text) == book.structured_content
    assert not search.is_error, search
    assert sorted(search.structured_content["query"]) == [["limit", "5"], ["q", "dune"], ["sort", "year"]]


@pytest.mark.parametrize("mode", MODES)
async def test_the_body_arguments_are_sent_as_one_json_body(library, mode):
    """The body object's properties, a recursive category tree among them, are sent as the JSON body."""
    async with sdk(library, mode) as client:
        result = await client.call_tool("createBook", BOOK)
    assert not result.is_error, result
    assert result.structured_content["method"] == "POST"
    assert json.loads(result.structured_content["body"]) == BOOK


@pytest.mark.parametrize("mode", MODES)
async def test_an_object_response_is_structured_content(library, mode):
    """GET /json answers an object that matches the output schema made from the document: structuredContent."""
    async with sdk(library, mode) as client:
        result = await client.call_tool("listItems", {})
        token = await client.call_tool("whoAmI", {})
    assert not result.is_error, result
    assert result.structured_content == {"data": {"items": ITEMS}, "count": len(ITEMS)}
    assert token.structured_content == {"bearer": True}  # the scheme's credentials given to the import


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_that_break_the_schema_are_refused_before_any_call(library, mode):
    """A format that matches neither oneOf branch, or a category tree with a nameless node deep in the cycle,
    is an isError result from the gateway's own check, naming the argument (SEP-1303): the API is not called."""
    broken_tree = {**BOOK, "category": {"name": "a", "children": [{"name": "b", "children": [{"title": "x"}]}]}}
    async with sdk(library, mode) as client:
        wrong_format = await client.call_tool("createBook", {**BOOK, "format": {"kind": "ebook", "pages": 3}})
        wrong_tree = await client.call_tool("createBook", broken_tree)
    assert wrong_format.is_error
    assert wrong_format.content[0].text.startswith("Invalid arguments for tool 'createBook': at /format")
    assert wrong_tree.is_error
    assert wrong_tree.content[0].text.startswith(
        "Invalid arguments for tool 'createBook': at /category/children/0/children/0"
    )


def rpc(gateway, message: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        gateway.url + "/servers/library/rpc", data=json.dumps(message).encode(), method="POST"
    )
    request.add_header("Authorization", f"Bearer {gateway.token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_the_imported_tools_answer_over_rpc(library):
    """POST /servers/library/rpc: one JSON-RPC tools/call, one JSON answer, no session."""
    status, body = rpc(
        library,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "getBook", "arguments": {"bookId": 7, "X-Request-Id": "rpc"}},
        },
    )
    assert status == 200, body
    result = body["result"]
    assert not result.get("isError"), result
    assert result["structuredContent"]["path"] == "/echo/books/7"
    assert lower_keys(result["structuredContent"]["headers"])["x-request-id"] == "rpc"
    status, body = rpc(
        library, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "listItems", "arguments": {}}}
    )
    assert body["result"]["structuredContent"]["count"] == len(ITEMS)
