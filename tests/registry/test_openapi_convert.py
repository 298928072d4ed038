"""OpenAPI documents become REST tool definitions (registry.openapi: document, refs, naming, urls, security,
convert). No database: these tests stop before anything is stored (tests/registry/test_openapi_import.py
covers the service).

References: OpenAPI 3.0.3 and 3.1.0 (Parameter, Request Body, Responses, Reference, Schema and Security
Scheme objects; "Path Templating"); JSON Schema 2020-12 ($ref, $defs); RFC 6570 (URI templates); MCP
2025-11-25 server/tools (inputSchema and outputSchema are objects, tool names of 1-128 characters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from jsonschema import Draft202012Validator

from registry.exceptions import InvalidInput
from registry.openapi import naming
from registry.openapi.convert import Conversion, ToolSpec, convert
from registry.openapi.document import load
from registry.validators import TOOL_NAME_RE

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "library.yaml"
BASE = "https://api.example.com/v1"


def doc(paths: dict[str, Any], *, version: str = "3.1.0", **extra: Any) -> dict[str, Any]:
    """A minimal valid document around ``paths``."""
    return {"openapi": version, "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def ok(description: str = "ok", schema: Any = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return {"200": response}


def run(document: dict[str, Any] | str, *, source: str = "test.json", base_url: str | None = BASE) -> Conversion:
    text = document if isinstance(document, str) else json.dumps(document)
    return convert(load(text), source=source, base_url=base_url)


def tool(conversion: Conversion, operation: str) -> ToolSpec:
    return next(spec for spec in conversion.tools if spec.operation == operation)


def compiles(schema: dict[str, Any]) -> Any:
    """The schema is valid 2020-12 and jsonschema-rs (what the gateway enforces with) compiles it."""
    Draft202012Validator.check_schema(schema)
    return jsonschema_rs.validator_for(schema)


# -- the fixture document (OpenAPI 3.1, YAML) ----------------------------------------------------------


def test_the_library_document_becomes_one_tool_per_operation():
    """Every operation of the 3.1 YAML fixture is a tool named after its operationId, with the summary as
    title, summary and description as description, and the operation recorded for re-imports."""
    result = run(FIXTURE.read_text(), source="library.yaml")
    assert result.warnings == []
    assert [(spec.operation, spec.operation_id) for spec in result.tools] == [
        ("GET /json", "listItems"),
        ("POST /echo/books", "createBook"),
        ("GET /echo/books/{bookId}", "getBook"),
        ("GET /echo/search", "searchBooks"),
        ("GET /auth/bearer", "whoAmI"),
    ]
    listing = tool(result, "GET /json")
    assert listing.title == "List items"
    assert listing.description == "List items\n\nA fixed page of two items."
    assert listing.backend_config["openapi"] == {
        "source": "library.yaml",
        "operation": "GET /json",
        "operation_id": "listItems",
    }
    assert listing.annotations == {"readOnlyHint": True, "openWorldHint": True}
    assert tool(result, "POST /echo/books").annotations["destructiveHint"] is False
    assert tool(result, "GET /auth/bearer").backend_config["auth"] == {"type": "bearer"}
    for spec in result.tools:
        compiles(spec.input_schema)
        if spec.output_schema is not None:
            compiles(spec.output_schema)


def test_path_query_and_header_parameters_merge_into_the_input_schema():
    """Path-item and operation parameters (OpenAPI "Parameter Object") become arguments: the path one goes into
    the RFC 6570 URL template and is required, the header and query ones are mapped by `params`."""
    result = run(FIXTURE.read_text())
    spec = tool(result, "GET /echo/books/{bookId}")
    assert spec.backend_config["url"] == BASE + "/echo/books/{bookId}"
    assert spec.backend_config["method"] == "GET"
    assert spec.backend_config["params"] == {"bookId": {"in": "path"}, "X-Request-Id": {"in": "header"}}
    assert spec.input_schema["required"] == ["bookId"]
    assert spec.input_schema["properties"]["X-Request-Id"] == {
        "type": "string",
        "description": "Echoed back, for tracing.",
    }
    search = tool(result, "GET /echo/search")
    assert search.backend_config["params"] == {"q": {"in": "query"}, "limit": {"in": "query"}, "sort": {"in": "query"}}
    assert search.input_schema["properties"]["limit"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}
    assert search.input_schema["required"] == ["q"]


def test_a_ref_chain_is_followed_to_the_schema():
    """#/components/parameters/BookId -> its schema #/components/schemas/BookId -> #/components/schemas/Identifier:
    the argument's schema is the end of the chain, with the parameter's description."""
    spec = tool(run(FIXTURE.read_text()), "GET /echo/books/{bookId}")
    assert spec.input_schema["properties"]["bookId"] == {
        "type": "integer",
        "minimum": 1,
        "description": "The book's number.",
    }


def test_one_of_and_any_of_are_kept_and_enforced():
    """oneOf and anyOf survive the conversion, so the gateway checks arguments with them before a call."""
    result = run(FIXTURE.read_text())
    spec = tool(result, "POST /echo/books")
    properties = spec.input_schema["properties"]
    assert [alt["properties"]["kind"] for alt in properties["format"]["oneOf"]] == [
        {"const": "paperback"},
        {"const": "ebook"},
    ]
    assert properties["price"]["anyOf"] == [{"type": "number", "minimum": 0}, {"type": "string"}]
    validator = compiles(spec.input_schema)
    assert validator.is_valid({"title": "Dune", "format": {"kind": "ebook", "megabytes": 2.5}, "price": "free"})
    assert not validator.is_valid({"title": "Dune", "format": {"kind": "ebook", "pages": 3}})
    assert not validator.is_valid({"title": "Dune", "format": {"kind": "paperback", "pages": 3}, "price": -1})
    sort = tool(result, "GET /echo/search").input_schema["properties"]["sort"]
    assert sort == {"oneOf": [{"const": "title"}, {"const": "year"}]}


TREE = {"name": "a", "children": [{"name": "b", "children": [{"name": "c", "parent": {"name": "b"}}]}]}
BROKEN_TREE = {"name": "a", "children": [{"name": "b", "children": [{"title": "no name"}]}]}


def test_a_cycle_becomes_a_defs_reference_and_the_schema_stays_finite():
    """Category.children are Categories: the expansion stops at the cycle with {"$ref": "#/$defs/Category"}
    (JSON Schema 2020-12 $defs), so the schema is finite and still validates trees of any depth."""
    spec = tool(run(FIXTURE.read_text()), "POST /echo/books")
    category = spec.input_schema["properties"]["category"]
    assert category["properties"]["children"]["items"] == {"$ref": "#/$defs/Category"}
    assert spec.input_schema["$defs"]["Category"]["properties"]["parent"] == {"$ref": "#/$defs/Category"}
    validator = compiles(spec.input_schema)
    book = {"title": "Dune", "format": {"kind": "ebook", "megabytes": 1}}
    assert validator.is_valid({**book, "category": TREE})
    assert not validator.is_valid({**book, "category": BROKEN_TREE})
    assert len(json.dumps(spec.input_schema)) < 3000


def test_a_cycle_at_the_top_of_a_response_refers_to_itself_at_once():
    """A response whose schema is itself the recursive one: its children point straight at $defs."""
    document = doc(
        {"/tree": {"get": {"responses": ok("x", {"$ref": "#/components/schemas/Node"})}}},
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "parent": {"$ref": "#/components/schemas/Node"},
                        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    },
                }
            }
        },
    )
    output = run(document).tools[0].output_schema
    assert output is not None
    assert output["properties"]["parent"] == {"$ref": "#/$defs/Node"}
    assert output["$defs"]["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    validator = compiles(output)
    assert validator.is_valid(TREE)
    assert not validator.is_valid(BROKEN_TREE)


def test_the_body_object_joins_the_arguments_when_no_name_collides():
    """An application/json body that is an object: its properties are arguments beside the parameters, sent as
    the JSON body; its required list joins the tool's."""
    spec = tool(run(FIXTURE.read_text()), "POST /echo/books")
    assert spec.backend_config["body"] == {"encoding": "json"}
    assert spec.backend_config["params"] == {name: {"in": "body"} for name in ("title", "price", "format", "category")}
    assert spec.input_schema["required"] == ["title", "format"]


def test_the_output_schema_comes_from_the_success_response():
    """The first 2xx response's JSON schema (through a response $ref and a schema $ref) is the output schema
    when it describes an object (MCP outputSchema), and the JSON media type becomes the Accept header."""
    listing = tool(run(FIXTURE.read_text()), "GET /json")
    assert listing.output_schema is not None
    assert listing.output_schema["type"] == "object"
    assert listing.output_schema["properties"]["data"]["properties"]["items"]["items"]["properties"]["id"] == {
        "type": "integer",
        "minimum": 1,
    }
    assert listing.backend_config["headers"] == {"Accept": "application/json"}
    validator = compiles(listing.output_schema)
    items = [{"id": 1, "title": "first", "tags": ["a"]}, {"id": 2, "title": "second", "tags": ["b", "c"]}]
    assert validator.is_valid({"data": {"items": items}, "count": 2})
    assert not validator.is_valid({"data": {"items": [{"id": 0, "title": "zero"}]}, "count": 1})


# -- 3.0 and JSON --------------------------------------------------------------------------------------


PETS_30 = doc(
    {
        "/pets/{petId}": {
            "patch": {
                "operationId": "updatePet",
                "parameters": [
                    {"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "session", "in": "cookie", "schema": {"type": "string"}},
                    {"name": "Accept", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/PetPatch"}}}},
                "responses": ok("updated", {"$ref": "#/components/schemas/Pet"}),
            }
        }
    },
    version="3.0.3",
    components={
        "schemas": {
            "PetPatch": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "nullable": True, "example": "Rex"},
                    "age": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                    "id": {"type": "string", "readOnly": True},
                    "secret": {"type": "string", "writeOnly": True},
                },
                "required": ["id"],
            },
            "Pet": {"$ref": "#/components/schemas/PetPatch"},
        }
    },
)


def test_an_openapi_30_json_document_is_translated_to_json_schema_2020_12():
    """3.0's schema dialect becomes 2020-12: nullable -> a "null" type, a boolean exclusiveMinimum -> the number,
    example -> examples; readOnly properties leave the input and writeOnly ones the output (Schema Object)."""
    result = run(PETS_30)
    spec = tool(result, "PATCH /pets/{petId}")
    properties = spec.input_schema["properties"]
    assert properties["name"] == {"type": ["string", "null"], "examples": ["Rex"]}
    assert properties["age"] == {"type": "integer", "exclusiveMinimum": 0}
    assert "id" not in properties
    assert spec.input_schema["required"] == ["petId"]  # "id" was required but is readOnly
    assert spec.output_schema is not None
    assert set(spec.output_schema["properties"]) == {"name", "age", "id"}
    compiles(spec.input_schema)
    compiles(spec.output_schema)


def test_cookie_parameters_are_skipped_with_a_warning_and_reserved_headers_ignored():
    """Cookies are not sent (warned); Accept, Content-Type and Authorization header parameters "SHALL be
    ignored" (OpenAPI Parameter Object)."""
    result = run(PETS_30)
    spec = tool(result, "PATCH /pets/{petId}")
    assert "session" not in spec.input_schema["properties"]
    assert "Accept" not in spec.input_schema["properties"]
    assert result.warnings == [
        "PATCH /pets/{petId}: the cookie parameter 'session' is left out (cookies are not sent)."
    ]


def test_a_body_whose_property_collides_with_a_parameter_is_one_body_argument():
    """A body property named like a parameter cannot join the top level: the whole body is the `body`
    argument, sent as the JSON body (body.argument)."""
    document = doc(
        {
            "/items/{id}": {
                "put": {
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "requestBody": {
                        "required": True,
                        "description": "The new item.",
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "x": {}}}
                            }
                        },
                    },
                    "responses": ok(),
                }
            }
        }
    )
    spec = tool(run(document), "PUT /items/{id}")
    assert spec.backend_config["body"] == {"encoding": "json", "argument": "body"}
    assert spec.backend_config["params"] == {"id": {"in": "path"}, "body": {"in": "body"}}
    assert spec.input_schema["properties"]["body"]["description"] == "The new item."
    assert spec.input_schema["required"] == ["id", "body"]


def test_form_raw_and_array_bodies():
    """A form body's fields are arguments (encoding form); text/plain is sent raw from `body`; a JSON array is
    one `body` argument; multipart is not supported (skipped, warned)."""
    document = doc(
        {
            "/form": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"type": "object", "properties": {"q": {"type": "string"}}}
                            }
                        }
                    },
                    "responses": ok(),
                }
            },
            "/raw": {
                "post": {
                    "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}},
                    "responses": ok(),
                }
            },
            "/many": {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "integer"}}}}
                    },
                    "responses": ok(),
                }
            },
            "/upload": {
                "post": {
                    "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}},
                    "responses": ok(),
                }
            },
        }
    )
    result = run(document)
    form = tool(result, "POST /form")
    assert form.backend_config["body"] == {"encoding": "form"}
    assert form.backend_config["params"] == {"q": {"in": "body"}}
    raw = tool(result, "POST /raw")
    assert raw.backend_config["body"] == {"encoding": "raw", "argument": "body", "content_type": "text/csv"}
    assert raw.input_schema == {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"]}
    many = tool(result, "POST /many")
    assert many.backend_config["body"] == {"encoding": "json", "argument": "body"}
    assert many.input_schema["properties"]["body"] == {"type": "array", "items": {"type": "integer"}}
    assert [spec.operation for spec in result.tools] == ["POST /form", "POST /raw", "POST /many"]
    assert any("POST /upload" in w and "multipart/form-data bodies are not supported" in w for w in result.warnings)


def test_only_object_responses_give_an_output_schema():
    """MCP requires an outputSchema of type object: an array or nullable-object response gives none."""
    document = doc(
        {
            "/list": {"get": {"responses": ok("x", {"type": "array", "items": {"type": "string"}})}},
            "/maybe": {"get": {"responses": ok("x", {"type": ["object", "null"]})}},
            "/created": {
                "post": {
                    "responses": {
                        "201": {
                            "description": "x",
                            "content": {"application/hal+json": {"schema": {"properties": {"a": {"type": "string"}}}}},
                        }
                    }
                }
            },
        }
    )
    result = run(document)
    assert tool(result, "GET /list").output_schema is None
    assert tool(result, "GET /maybe").output_schema is None
    created = tool(result, "POST /created")
    assert created.output_schema == {"properties": {"a": {"type": "string"}}, "type": "object"}
    assert created.backend_config["headers"] == {"Accept": "application/hal+json"}


def test_path_styles_become_rfc_6570_operators_and_names_become_variables():
    """style label/matrix -> {.x}/{;x}, explode -> '*'; a parameter name that is not an RFC 6570 varname is
    renamed for the template; literal characters a template cannot hold are percent-encoded."""
    document = doc(
        {
            "/a/{user-id}/{color}/{point}/it's": {
                "get": {
                    "parameters": [
                        {"name": "user-id", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "color", "in": "path", "required": True, "style": "label", "schema": {}},
                        {
                            "name": "point",
                            "in": "path",
                            "required": True,
                            "style": "matrix",
                            "explode": True,
                            "schema": {"type": "object"},
                        },
                        {"name": "user-id", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": ok(),
                }
            }
        }
    )
    spec = run(document).tools[0]
    assert spec.backend_config["url"] == BASE + "/a/{user_id}/{.color}/{;point*}/it%27s"
    assert spec.backend_config["params"] == {
        "user_id": {"in": "path"},
        "color": {"in": "path"},
        "point": {"in": "path"},
        "user-id": {"in": "query"},
    }


# -- servers -------------------------------------------------------------------------------------------


def test_the_server_url_takes_its_variables_defaults_or_the_base_url():
    """servers[0] with variables' defaults (OpenAPI Server Object); an operation's own servers win; a base_url
    given to the import replaces them all; a relative server URL is resolved against a URL source."""
    document = doc(
        {
            "/a": {"get": {"responses": ok()}},
            "/b": {"get": {"servers": [{"url": "https://other.example.com"}], "responses": ok()}},
        },
        servers=[
            {
                "url": "https://{region}.example.com/{base}",
                "variables": {"region": {"default": "eu"}, "base": {"default": "v2"}},
            }
        ],
    )
    result = run(document, base_url=None)
    assert tool(result, "GET /a").backend_config["url"] == "https://eu.example.com/v2/a"
    assert tool(result, "GET /b").backend_config["url"] == "https://other.example.com/b"
    assert tool(run(document, base_url="http://127.0.0.1:8000/x/"), "GET /b").backend_config["url"] == (
        "http://127.0.0.1:8000/x/b"
    )
    relative = doc({"/a": {"get": {"responses": ok()}}}, servers=[{"url": "/api"}])
    fetched = run(relative, source="https://docs.example.com/specs/openapi.json", base_url=None)
    assert fetched.tools[0].backend_config["url"] == "https://docs.example.com/api/a"
    with pytest.raises(InvalidInput, match=r"#/servers/0: the server URL '/api' is relative .* give a base URL"):
        run(relative, source="openapi.json", base_url=None)
    with pytest.raises(InvalidInput, match="base URL 'ftp://x' must be an http"):
        run(relative, base_url="ftp://x")


# -- security ------------------------------------------------------------------------------------------


SCHEMES = {
    "basic": {"type": "http", "scheme": "basic"},
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "headerKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "queryKey": {"type": "apiKey", "in": "query", "name": "api_key"},
    "cookieKey": {"type": "apiKey", "in": "cookie", "name": "sid"},
    "digest": {"type": "http", "scheme": "digest"},
    "machines": {
        "type": "oauth2",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {"read": "r", "write": "w"}}},
    },
    "people": {
        "type": "oauth2",
        "flows": {"authorizationCode": {"authorizationUrl": "https://a", "tokenUrl": "https://t", "scopes": {}}},
    },
}


@pytest.mark.parametrize(
    ("security", "auth", "scheme"),
    [
        ([{"basic": []}], {"type": "basic"}, "basic"),
        ([{"bearer": []}], {"type": "bearer"}, "bearer"),
        ([{"headerKey": []}], {"type": "api_key", "in": "header", "name": "X-API-Key"}, "headerKey"),
        ([{"queryKey": []}], {"type": "api_key", "in": "query", "name": "api_key"}, "queryKey"),
        (
            [{"machines": ["read"]}],
            {"type": "oauth2", "token_url": "https://api.example.com/oauth/token", "scopes": ["read"]},
            "machines",
        ),
        ([{"cookieKey": []}, {"digest": []}, {"people": []}, {"bearer": []}], {"type": "bearer"}, "bearer"),
        (
            [{"basic": [], "bearer": []}, {"queryKey": []}],
            {"type": "api_key", "in": "query", "name": "api_key"},
            "queryKey",
        ),
    ],
)
def test_security_schemes_map_to_the_tool_auth(security, auth, scheme):
    """http basic/bearer, apiKey in header or query, oauth2 clientCredentials (tokenUrl resolved against the
    server, the requirement's scopes); the first requirement the gateway can serve wins."""
    document = doc(
        {"/a": {"get": {"security": security, "responses": ok()}}},
        components={"securitySchemes": SCHEMES},
        servers=[{"url": "https://api.example.com/v1"}],
    )
    spec = run(document, base_url=None).tools[0]
    assert spec.backend_config["auth"] == auth
    assert spec.security_scheme == scheme


def test_operation_security_overrides_the_document_and_unmapped_security_warns():
    """An operation's `security: []` removes the document's requirement; a requirement the gateway cannot serve
    (API key in a cookie) is warned about and the tool has no auth."""
    document = doc(
        {
            "/open": {"get": {"security": [], "responses": ok()}},
            "/global": {"get": {"responses": ok()}},
            "/cookie": {"get": {"security": [{"cookieKey": []}], "responses": ok()}},
        },
        components={"securitySchemes": SCHEMES},
        security=[{"bearer": []}],
    )
    result = run(document)
    assert "auth" not in tool(result, "GET /open").backend_config
    assert tool(result, "GET /global").backend_config["auth"] == {"type": "bearer"}
    assert "auth" not in tool(result, "GET /cookie").backend_config
    assert result.warnings == [
        "GET /cookie: its security cannot be mapped: cookieKey (API keys in a cookie are not supported (header or "
        "query only)); the tool is imported without authentication."
    ]


# -- naming --------------------------------------------------------------------------------------------


def test_names_come_from_operation_ids_or_method_and_path_within_64_characters():
    """A valid operationId is the name; others are sanitised; without one the name is derived from the method
    and path; every name matches the tool-name rule and has at most 64 characters."""
    ops = [
        naming.Operation("GET /users", "listUsers"),
        naming.Operation("GET /users:batch", "users:batchGet"),
        naming.Operation("GET /users/{id}/posts", None),
        naming.Operation("GET /", None),
        naming.Operation("POST /x", "a" * 100),
        naming.Operation("POST /y", "é ü"),
    ]
    names = naming.assign(ops)
    assert names["GET /users"] == "listUsers"
    assert names["GET /users:batch"] == "users_batchGet"
    assert names["GET /users/{id}/posts"] == "get_users_id_posts"
    assert names["GET /"] == "get_root"
    assert len(names["POST /x"]) == 64
    assert names["POST /x"].startswith("a" * 55 + "_")
    assert names["POST /y"] == "post_y"  # nothing valid left of the operationId
    assert all(TOOL_NAME_RE.fullmatch(name) and len(name) <= 64 for name in names.values())
    assert len(set(names.values())) == len(ops)


def test_colliding_names_get_deterministic_suffixes_and_earlier_names_stay():
    """Two operations that would share a name: an exact operationId keeps it, the other gets a suffix made from
    a digest of its own operation (the same whatever else the document holds); on a re-import, the name an
    earlier import gave an operation stays, even when a new operation would now claim it."""
    first = naming.assign([naming.Operation("GET /a b", "get a"), naming.Operation("GET /c", None)])
    assert first == {"GET /a b": "get_a", "GET /c": "get_c"}
    crowded = [naming.Operation("GET /a/{x}", None), naming.Operation("GET /a/x", None)]
    names = naming.assign(crowded)
    assert names["GET /a/{x}"] == "get_a_x"
    assert names["GET /a/x"] == f"get_a_x_{naming.digest('GET /a/x', 6)}"
    assert naming.assign(list(reversed(crowded)))["GET /a/x"] == "get_a_x"  # order decides who is first...
    later = [naming.Operation("GET /a/x", None), *crowded]
    stable = naming.assign(later[1:], previous=names)
    assert stable == names  # ...but a re-import keeps what an earlier import gave
    exact = naming.assign([naming.Operation("GET /a b", "get a"), naming.Operation("GET /z", "get_a")], previous=first)
    assert exact == {"GET /a b": "get_a", "GET /z": f"get_a_{naming.digest('GET /z', 6)}"}


def test_the_same_document_gives_the_same_names():
    """Names depend only on the document: converting twice gives the same tools."""
    assert run(FIXTURE.read_text()).tools == run(FIXTURE.read_text()).tools


# -- bounds --------------------------------------------------------------------------------------------


def test_an_exploding_schema_falls_back_to_defs_and_stays_small():
    """Schemas that would inline to 2**14 copies are kept as $defs entries instead, each built once."""
    schemas = {
        f"L{i}": {
            "type": "object",
            "properties": {
                "a": {"$ref": f"#/components/schemas/L{i + 1}"},
                "b": {"$ref": f"#/components/schemas/L{i + 1}"},
            },
        }
        for i in range(14)
    }
    schemas["L14"] = {"type": "string"}
    document = doc(
        {
            "/big": {
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/L0"}}}},
                    "responses": ok(),
                }
            }
        },
        components={"schemas": schemas},
    )
    spec = run(document).tools[0]
    assert set(spec.input_schema["properties"]) == {"a", "b"}
    assert spec.input_schema["properties"]["a"] == {"$ref": "#/$defs/L1"}
    assert len(json.dumps(spec.input_schema)) < 5000
    validator = compiles(spec.input_schema)
    leaf: Any = "x"
    for _ in range(14):  # L0 ... L13 are objects, L14 a string
        leaf = {"a": leaf, "b": leaf}
    assert validator.is_valid(leaf)
    assert not validator.is_valid({"a": {"a": 1}})


def test_yaml_integer_keys_and_dates_are_read_as_json():
    """YAML reads `200:` as a number and dates as dates: they become the strings JSON has."""
    text = """
openapi: 3.0.3
info: {title: t, version: "1", x-released: 2024-01-02}
paths:
  /a:
    get:
      responses:
        200:
          description: ok
          content:
            application/json:
              schema: {type: object, properties: {n: {type: integer}}}
"""
    spec = run(text).tools[0]
    assert spec.output_schema == {"type": "object", "properties": {"n": {"type": "integer"}}}


# -- bad documents -------------------------------------------------------------------------------------


def chain_document(length: int) -> dict[str, Any]:
    schemas = {f"S{i}": {"$ref": f"#/components/schemas/S{i + 1}"} for i in range(length)}
    schemas[f"S{length}"] = {"type": "string"}
    return doc(
        {
            "/a": {
                "get": {
                    "parameters": [{"name": "q", "in": "query", "schema": {"$ref": "#/components/schemas/S0"}}],
                    "responses": ok(),
                }
            }
        },
        components={"schemas": schemas},
    )


BAD_DOCUMENTS = [
    ("", "The OpenAPI document is empty"),
    ("just: [text", r"not valid YAML: .*\(line 1, column"),
    ('{"openapi": "3.1.0",', r"not valid JSON: .*line 1"),
    (json.dumps({"info": {}}), "Not an OpenAPI document: there is no 'openapi' field"),
    (json.dumps({"swagger": "2.0"}), "This is a Swagger 2.0 document; only OpenAPI 3.0 and 3.1"),
    (
        json.dumps(doc({}, version="3.2.0")),
        "OpenAPI version '3.2.0' is not supported; this gateway imports 3.0.x and 3.1.x",
    ),
    (
        "openapi: 3.1\ninfo: {title: t, version: '1'}\npaths: {}\n",
        r"must be a version string such as \"3.1.0\", not the number 3.1",
    ),
    ("- a\n- b\n", "the top level must be an object"),
    (
        json.dumps(doc({"/a": {"get": {"responses": ok("x", {"$ref": "https://evil.example.com/s.json#/X"})}}})),
        r"#/paths/~1a/get/responses/200/content/application~1json/schema/\$ref: 'https://evil.example.com/s.json#/X' "
        r"is a remote reference; only references inside the document \('#/...'\) are followed, nothing is fetched",
    ),
    (
        json.dumps(doc({"/a": {"get": {"responses": ok("x", {"$ref": "common.yaml#/Pet"})}}})),
        r"'common.yaml#/Pet' is a reference to another file",
    ),
    (
        json.dumps(doc({"/a": {"get": {"responses": ok("x", {"$ref": "#/components/schemas/Nope"})}}})),
        r"#/paths/~1a/get/responses/200/content/application~1json/schema/\$ref: '#/components/schemas/Nope' points "
        r"to nothing in the document \(no 'components'\)",
    ),
    (
        json.dumps(
            doc({"/a": {"get": {"responses": ok("x", {"$id": "https://evil.example.com/", "type": "object"})}}})
        ),
        r"'\$id' is not supported in imported documents",
    ),
    (
        json.dumps({"openapi": "3.1.0", "info": {"title": "t"}, "paths": {}}),
        r"Not a valid OpenAPI 3.1 document at #/info: [\"']version[\"'] is a required property",
    ),
    (
        json.dumps(doc({"/a": {"get": {}}}, version="3.0.3")),
        r"Not a valid OpenAPI 3.0 document at #/paths/~1a/get: [\"']responses[\"'] is a required property",
    ),
    (
        json.dumps(chain_document(40)),
        r"#/paths/~1a/get/parameters/0/schema/\$ref: more than 32 references in a chain "
        r"\(#/components/schemas/S0 -> ... -> #/components/schemas/S32\)",
    ),
    (
        json.dumps(
            doc(
                {
                    "/a": {
                        "get": {
                            "parameters": [{"name": "q", "in": "query", "schema": {"$ref": "#/components/schemas/A"}}],
                            "responses": ok(),
                        }
                    }
                },
                components={
                    "schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}
                },
            )
        ),
        r"form a loop with no schema in it",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_DOCUMENTS)
def test_bad_documents_are_refused_with_a_message_naming_the_problem(text, message):
    """Each broken document is refused with an InvalidInput saying what and where; nothing is fetched."""
    with pytest.raises(InvalidInput, match=message):
        run(text)


def test_a_document_over_the_size_bound_is_refused_before_parsing():
    with pytest.raises(InvalidInput, match="The OpenAPI document is 101 bytes; at most 100 bytes are accepted"):
        load("x" * 101, max_bytes=100)


def test_yaml_aliases_cannot_expand_without_bound():
    """A "billion laughs" of YAML aliases is refused once it passes a million values."""
    lines = ["openapi: 3.1.0", "x-a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(InvalidInput, match="more than 1000000 values"):
        load("\n".join(lines))


def test_a_recursive_yaml_alias_is_refused():
    with pytest.raises(InvalidInput, match="nested more than 200 levels deep"):
        load("openapi: 3.1.0\nx-loop: &loop [*loop]\n")


def test_the_fixture_document_is_valid_yaml_for_other_tools():
    """The fixture parses as plain YAML and declares OpenAPI 3.1 (it is also served to the gateway test)."""
    data = yaml.safe_load(FIXTURE.read_text())
    assert data["openapi"].startswith("3.1.")
