"""Hypothesis strategies for what an MCP client might send: JSON-RPC envelopes of both protocol eras, valid
and broken, the bytes that carry them, and the HTTP headers around them.

A message is built as Python data and encoded by ``encode``, which passes ``Raw`` fragments through as they
are: that is how bodies get JSON Python would not write (nesting a thousand deep, integers past 64 bits,
NaN, lone surrogates, duplicate keys). ``Body`` pairs the bytes with the message they encode (None when the
bytes are not one), so the checks know which id the gateway should answer with.

Strategies that need the gateway's catalog (tool names, resource URIs, prompt names) take a ``Catalog``;
the tests draw from them with ``st.data()``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

MODERN = "2026-07-28"
LEGACY = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

# Every method of both eras, client to server and (wrongly sent) server to client, and some that exist nowhere.
REQUESTS = (
    "initialize",
    "ping",
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "tasks/result",
)
NOTIFICATIONS = (
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/message",
    "notifications/tools/list_changed",
    "notifications/elicitation/complete",
    "notifications/subscriptions/acknowledged",
)
# The methods that read the most of their params: drawn more often.
TARGETED = ("tools/call", "tools/call", "prompts/get", "resources/read", "initialize", "completion/complete")
ODD_METHODS = ("", " ", "tools/", "/tools/list", "TOOLS/LIST", "tools/list\u0000", "rpc.discover", "$/cancel", "é/ü")
# Tools of the fixture upstream that answer by themselves: the others ask the client something (elicitation,
# sampling, roots) and, in a session that declared nothing, only the gateway's tool timeout ends them, or they
# change the catalog under the other examples.
QUIET_TOOLS = (
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_error_handling",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "json_schema_2020_12_tool",
    "test_missing_capability",
    "test_journal",
    "wrapped_add",
)


class Raw(str):
    """A JSON fragment written into the body as it is."""


def encode(value: Any) -> str:
    """JSON text of ``value``, with ``Raw`` fragments verbatim (compact, like most clients)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(key) + ":" + encode(item) for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(item) for item in value) + "]"
    return json.dumps(value, allow_nan=False)


@dataclass
class Catalog:
    """What the gateway serves, as its tools/list, resources/list, templates and prompts/list say."""

    tools: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    def quiet_tools(self) -> list[str]:
        return [name for name in self.tools if any(name.endswith(quiet) for quiet in QUIET_TOOLS)]


@dataclass
class Body:
    """What goes into one HTTP body or WebSocket frame: ``data`` (bytes, or text for a WebSocket text frame),
    and the message it encodes when it is one JSON value built here (None for broken bytes)."""

    data: bytes
    message: Any = None
    label: str = ""

    def __repr__(self) -> str:  # Hypothesis prints it for a failing example: keep it readable and short
        shown = self.data if len(self.data) <= 400 else self.data[:400] + b"...(%d bytes)" % len(self.data)
        return f"Body({self.label}: {shown!r})"


# -- JSON values -------------------------------------------------------------------------------------------


def _big_ints() -> st.SearchStrategy[Raw]:
    return st.sampled_from(
        [
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "1" + "0" * 400,
            "1e400",
            "-0",
            "1.0",
            "1e2",
            "0.0000001",
        ]
    ).map(Raw)


def _not_json_values() -> st.SearchStrategy[Raw]:
    tokens = ['"\\ud800"', '"\\udc00x"', "NaN", "Infinity", "-Infinity", "undefined", "'x'", '"\\x41"']
    return st.sampled_from(tokens).map(Raw)


def deep(depth: int, kind: str) -> Raw:
    """Nesting ``depth`` levels deep: arrays, objects, or both alternating."""
    if kind == "array":
        return Raw("[" * depth + "1" + "]" * depth)
    if kind == "object":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    opening = "".join('[{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}]" if i % 2 else "]" for i in reversed(range(depth)))
    return Raw(opening + "1" + closing)


def deep_values() -> st.SearchStrategy[Raw]:
    return st.builds(
        deep,
        st.one_of(st.sampled_from([200, 253, 254, 255, 256, 300, 511, 1023, 1024, 1025, 5000]), st.integers(1, 300)),
        st.sampled_from(["array", "object", "mixed"]),
    )


def huge_values() -> st.SearchStrategy[Any]:
    """Values large enough to matter: long strings (over and under the gateway's body bound), long arrays, wide
    objects."""
    return st.one_of(
        st.integers(1_000, 300_000).map(lambda n: "x" * n),
        st.integers(1_000, 60_000).map(lambda n: Raw("[" + ",".join(["0"] * n) + "]")),
        st.integers(100, 5_000).map(lambda n: Raw("{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}")),
        st.integers(100, 3_000).map(lambda n: "é\u2028\U0001f600" * n),
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def any_value() -> st.SearchStrategy[Any]:
    """Any JSON value, often an extreme one (where the bugs are): very large numbers, tokens that are not JSON,
    deep nesting; now and then a huge one."""
    return st.one_of(
        json_values,
        st.lists(json_scalars, min_size=1, max_size=3),
        st.dictionaries(st.text(max_size=4), json_scalars, min_size=1, max_size=2),
        _big_ints(),
        _not_json_values(),
        deep_values(),
        deep_values(),
        st.integers(0, 9).flatmap(lambda n: huge_values() if n == 0 else json_values),
    )


def objects() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=12), any_value(), max_size=4)


# -- envelopes ---------------------------------------------------------------------------------------------

MISSING = object()  # a field left out


def ids() -> st.SearchStrategy[Any]:
    """Ids of every JSON type: mostly valid ones (strings, integers), then the rest."""
    valid = st.one_of(
        st.integers(-5, 1000),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.text(max_size=12),
        st.sampled_from(["", "0", "sentinel", "gw-x-1", "1" * 200]),
    )
    invalid = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.lists(json_scalars, max_size=3),
        st.dictionaries(st.text(max_size=4), json_scalars, max_size=2),
        _big_ints(),
        deep_values(),
    )
    return st.one_of(valid, valid, valid, invalid)


def meta(*, valid: bool | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """A 2026-07-28 `_meta` envelope: right, or wrong in one or several of its fields."""
    right = st.fixed_dictionaries(
        {META_VERSION: st.just(MODERN), META_CAPABILITIES: st.sampled_from([{}, {"elicitation": {}}])},
        optional={META_INFO: st.just({"name": "fuzz", "version": "1"}), META_LOG_LEVEL: st.sampled_from(LOG_LEVELS)},
    )
    wrong = st.fixed_dictionaries(
        {},
        optional={
            META_VERSION: st.one_of(st.sampled_from([MODERN, *LEGACY, "2099-01-01", "", "latest"]), any_value()),
            META_CAPABILITIES: st.one_of(st.just({}), any_value()),
            META_INFO: st.one_of(st.just({"name": "fuzz", "version": "1"}), any_value()),
            META_LOG_LEVEL: st.one_of(st.sampled_from(LOG_LEVELS), any_value()),
            "progressToken": st.one_of(ids(), any_value()),
            "io.modelcontextprotocol/unknown": any_value(),
        },
    )
    if valid is True:
        return right
    if valid is False:
        return wrong
    return st.one_of(right, right, wrong)


@st.composite
def params_for(draw: st.DrawFn, method: str, catalog: Catalog) -> Any:
    """Params for ``method``: plausible for it most of the time, anything at all otherwise."""
    tools = catalog.quiet_tools() or ["none"]
    name_of = {
        "tools/call": st.one_of(st.sampled_from(tools), st.sampled_from(tools), st.text(max_size=20), any_value()),
        "prompts/get": st.one_of(st.sampled_from(catalog.prompts or ["none"]), st.text(max_size=20), any_value()),
    }
    uris = st.one_of(
        st.sampled_from(catalog.resources or ["file:///none"]),
        st.sampled_from(["test://template/1/data", "test://template/%2e%2e/data", "file:///etc/passwd"]),
        st.text(max_size=40),
        any_value(),
    )
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "initialize": st.fixed_dictionaries(
            {},
            optional={
                "protocolVersion": st.one_of(st.sampled_from([*LEGACY, MODERN, "1999-01-01"]), any_value()),
                "capabilities": st.one_of(st.just({}), st.just({"sampling": {}, "roots": {}}), any_value()),
                "clientInfo": st.one_of(st.just({"name": "fuzz", "version": "1"}), any_value()),
            },
        ),
        "tools/call": st.fixed_dictionaries(
            {"name": name_of["tools/call"]},
            optional={
                "arguments": st.one_of(
                    st.fixed_dictionaries({"a": st.one_of(st.integers(), any_value())}, optional={"b": any_value()}),
                    objects(),
                    any_value(),
                ),
                "inputResponses": st.one_of(objects(), any_value()),
                "requestState": st.one_of(st.text(max_size=60), st.just("a.b"), any_value()),
                "task": any_value(),
            },
        ),
        "prompts/get": st.fixed_dictionaries(
            {"name": name_of["prompts/get"]},
            optional={"arguments": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=20)), any_value())},
        ),
        "resources/read": st.fixed_dictionaries({"uri": uris}),
        "resources/subscribe": st.fixed_dictionaries({"uri": uris}),
        "resources/unsubscribe": st.fixed_dictionaries({"uri": uris}),
        "completion/complete": st.fixed_dictionaries(
            {
                "ref": st.one_of(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["ref/prompt", "ref/resource", "ref/tool"])},
                        optional={"name": name_of["prompts/get"], "uri": uris},
                    ),
                    any_value(),
                ),
                "argument": st.one_of(
                    st.fixed_dictionaries({"name": st.text(max_size=8), "value": st.text(max_size=8)}), any_value()
                ),
            },
            optional={"context": any_value()},
        ),
        "logging/setLevel": st.fixed_dictionaries({"level": st.one_of(st.sampled_from(LOG_LEVELS), any_value())}),
        "subscriptions/listen": st.fixed_dictionaries(
            {},
            optional={
                "notifications": st.one_of(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "toolsListChanged": st.booleans(),
                            "resourceSubscriptions": st.lists(uris, max_size=2),
                        },
                    ),
                    any_value(),
                )
            },
        ),
        "notifications/cancelled": st.fixed_dictionaries(
            {"requestId": st.one_of(ids(), any_value())}, optional={"reason": any_value()}
        ),
        "notifications/progress": st.fixed_dictionaries(
            {"progressToken": ids(), "progress": st.one_of(st.floats(), any_value())}
        ),
    }
    listing = st.fixed_dictionaries({}, optional={"cursor": st.one_of(st.text(max_size=30), any_value())})
    strategy = plausible.get(method, listing if method.endswith("/list") else objects())
    params = draw(st.one_of(strategy, strategy, strategy, st.just({}), any_value()))
    if isinstance(params, dict) and params and draw(st.booleans()):
        # Right in shape but for one member of the wrong type: what finds a `.get()` on a list or a dict key
        # that cannot be hashed.
        key = draw(st.sampled_from(sorted(params)))
        params = {**params, key: draw(wrong_types())}
    return params


def wrong_types() -> st.SearchStrategy[Any]:
    """A value of a type no MCP field expects where the strategies above put one."""
    return st.one_of(
        st.lists(json_scalars, min_size=1, max_size=2),
        st.dictionaries(st.text(max_size=4), json_scalars, min_size=1, max_size=2),
        st.just([]),
        st.just({}),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
        _big_ints(),
        deep_values(),
    )


@st.composite
def messages(draw: st.DrawFn, catalog: Catalog, *, era: str = "any") -> Any:
    """One JSON-RPC message: a request, a notification or a response, in one era's shape or another's, with
    any of its fields wrong, missing or extra. ``era``: "modern" adds a `_meta` envelope most of the time,
    "legacy" rarely, "any" half the time."""
    kind = draw(st.sampled_from(["request"] * 5 + ["notification"] * 3 + ["response", "junk"]))
    if kind == "junk":  # not shaped like a message at all
        return draw(st.one_of(any_value(), st.lists(json_values, max_size=3), objects()))
    message: dict[str, Any] = {}
    jsonrpc = draw(st.one_of(*[st.just("2.0")] * 5, st.just(MISSING), any_value()))
    if jsonrpc is not MISSING:
        message["jsonrpc"] = jsonrpc
    if kind == "response":
        message["id"] = draw(ids())
        body = draw(
            st.sampled_from(
                [{"result": {}}, {"error": {"code": -32601, "message": "x"}}, {"result": {}, "error": {}}, {}]
            )
        )
        message.update(body)
        return message
    targeted = st.sampled_from(TARGETED if kind == "request" else ("notifications/cancelled", "notifications/progress"))
    known = st.sampled_from(REQUESTS if kind == "request" else NOTIFICATIONS)
    odd = st.one_of(st.sampled_from(ODD_METHODS), st.text(max_size=30), st.just(MISSING), any_value())
    method = draw(st.one_of(targeted, targeted, targeted, known, known, st.sampled_from(REQUESTS + NOTIFICATIONS), odd))
    if method is not MISSING:
        message["method"] = method
    if kind == "request" or draw(st.integers(0, 9)) == 0:  # now and then a notification with an id too
        message["id"] = draw(ids())
    params = draw(st.one_of(params_for(method if isinstance(method, str) else "", catalog), st.just(MISSING)))
    chance = {"modern": 8, "legacy": 1, "any": 5}[era]
    if isinstance(params, dict) and draw(st.integers(0, 9)) < chance:
        params = {**params, "_meta": draw(meta())}
    if params is not MISSING:
        message["params"] = params
    if draw(st.integers(0, 6)) == 0:  # extra members: some mean something elsewhere, some nothing
        extra = draw(
            st.dictionaries(st.sampled_from(["result", "error", "jsonrpc2", "meta", "_meta", "ID"]), any_value())
        )
        message.update(extra)
    return message


def _broken_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """Bytes that are not one JSON value, or not UTF-8, made from a valid body."""
    cut = st.integers(0, max(len(valid) - 1, 0)).map(lambda n: valid[:n])
    return st.one_of(
        cut,
        st.binary(max_size=64),
        st.just(b""),
        st.sampled_from([b" ", b"\n", b"null", b"true", b"1", b'"x"', b"[]", b"{}", b"[[]]", b"[1,2]", b"{]"]),
        st.just(b"\xef\xbb\xbf" + valid),  # a UTF-8 byte order mark
        st.just(valid.decode("utf-8", "replace").encode("utf-16")),
        st.just(valid.decode("utf-8", "replace").encode("utf-32")),
        st.just(valid + b"garbage"),
        st.just(valid + valid),
        st.just(valid + b"\x00"),
        st.just(b"// comment\n" + valid),
        st.just(valid.replace(b'"', b"'")),
        st.just(b'{"jsonrpc":"2.0","id":1,"method":"tools/list","jsonrpc":"1.0"}'),  # duplicate member
        st.just(b'{"jsonrpc":"2.0","id":1,"id":null,"method":"ping"}'),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]).map(
            lambda bad: b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"' + bad + b'"}}'
        ),
        st.just(b'{"jsonrpc":"2.0","id":8,"method":"\xe9"}'),  # Latin-1, not UTF-8
    )


@st.composite
def bodies(draw: st.DrawFn, catalog: Catalog, *, era: str = "any", batches: bool = True) -> Body:
    """One body: a message (most of the time), a batch, or bytes that are not one JSON-RPC message."""
    choice = draw(st.sampled_from(["message"] * 7 + ["batch", "broken", "broken"]))
    if choice == "batch" and batches:
        batch = draw(st.lists(messages(catalog, era=era), max_size=5))
        return Body(encode(batch).encode(), batch, "batch")
    message = draw(messages(catalog, era=era))
    valid = encode(message).encode()
    if choice == "broken":
        return Body(draw(_broken_bytes(valid)), None, "broken")
    return Body(valid, message, "message")


# -- headers -----------------------------------------------------------------------------------------------

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# Header values as bytes: Latin-1 and obs-text too, but nothing that would end the header line.
header_bytes = st.binary(max_size=40).filter(lambda b: not {0, 10, 13} & set(b))
CONTENT_TYPES = (
    "application/json",
    "application/json",
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/json;charset=latin-1",
    "application/json ; foo=bar",
    "text/plain",
    "text/event-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json-rpc",
    "application/jsonx",
    "*/*",
    "",
    None,
)
ACCEPTS = (
    "application/json, text/event-stream",
    "application/json, text/event-stream",
    "text/event-stream, application/json;q=0.9",
    "*/*",
    "application/json",
    "text/event-stream",
    "text/html",
    "",
    None,
)


def name_of(message: Any) -> Any:
    params = message.get("params") if isinstance(message, dict) else None
    if not isinstance(params, dict):
        return None
    method = message.get("method")
    return params.get("uri") if method == "resources/read" else params.get("name")


def _header_form(value: Any) -> str | None:
    """How a client would put a body value into a header (the `=?base64?` form when it is not plain ASCII)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else encode(value)
    if text.isascii() and text.isprintable() and text == text.strip():
        return text
    return "=?base64?" + base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() + "?="


@st.composite
def headers(
    draw: st.DrawFn,
    body: Body,
    *,
    token: str,
    sessions: list[str] = (),  # type: ignore[assignment]
    streamable: bool = False,
) -> dict[str, str | bytes]:
    """HTTP request headers for ``body``: right for it most of the time (so the gateway looks past them at the
    body), and otherwise missing, mismatched, malformed or foreign."""
    result: dict[str, str | bytes] = {}
    message = body.message if isinstance(body.message, dict) else {}
    meta_block = message.get("params", {}).get("_meta") if isinstance(message.get("params"), dict) else None
    body_version = meta_block.get(META_VERSION) if isinstance(meta_block, dict) else None

    def pick(right: Any, *wrong: st.SearchStrategy[Any]) -> Any:
        # A header line longer than the HTTP server takes (daphne's: 16 KiB) is refused below the gateway.
        if isinstance(right, str) and len(right) > 2000:
            right = right[:2000]
        return draw(st.one_of(st.just(right), st.just(right), st.just(right), *wrong))

    result["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
    result["authorization"] = pick(
        f"Bearer {token}", st.sampled_from(["", "Bearer", "Bearer x.y.z", "Basic YWRtaW46eA==", f"bearer {token}"])
    )
    result["origin"] = draw(
        st.sampled_from([None] * 6 + ["http://127.0.0.1", "http://evil.example", "null", "file://", "http://[::1"])
    )
    if streamable:
        result["accept"] = draw(st.sampled_from(ACCEPTS))
        version = body_version if isinstance(body_version, str) else None
        result["mcp-protocol-version"] = pick(
            version, st.sampled_from([None, MODERN, *LEGACY, "2099-01-01", "", "garbage"]), header_text
        )
        method = message.get("method")
        result["mcp-method"] = pick(
            str(method) if isinstance(method, str) and method.isascii() and method.isprintable() else None,
            st.sampled_from([None, "tools/call", "ping", ""]),
            header_text,
        )
        result["mcp-name"] = pick(
            _header_form(name_of(message)),
            st.sampled_from([None, "", "=?base64?", "=?base64?!!!?=", "=?base64?/w==?="]),
            header_text,
        )
        result["mcp-session-id"] = draw(
            st.one_of(st.sampled_from([*sessions, *sessions, None, None]), header_text, st.just("x" * 300))
        )
    if draw(st.integers(0, 5)) == 0:
        extra_name = draw(
            st.sampled_from(["mcp-param-a", "mcp-param-", "last-event-id", "x-forwarded-for", "traceparent"])
        )
        result[extra_name] = draw(st.one_of(header_text, header_bytes))
    return {name: value for name, value in result.items() if value is not None}
