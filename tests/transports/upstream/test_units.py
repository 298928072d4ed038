"""Unit tests: the SSE parser, the config, the factory, and the pure parts of the 2026-07-28 era."""

from __future__ import annotations

import time

import pytest

from transports.protocol.upstream import TRANSPORTS, UpstreamConfig, UpstreamError, create_client, headers, stateless
from transports.protocol.upstream.base import describe_server
from transports.protocol.upstream.engine import strip_envelope
from transports.protocol.upstream.sse_parser import SSEError, SSEParser
from transports.protocol.vocabulary import META_LOG_LEVEL


def feed_all(parser: SSEParser, *chunks: bytes) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id) for chunk in chunks for e in parser.feed(chunk)]


def test_sse_events_ids_and_retry() -> None:
    parser = SSEParser(1024)
    stream = b'id: 1\ndata: \nretry: 100\n\n: keep-alive\n\nid: 2\nevent: message\ndata: {"a":1}\n\n'
    assert feed_all(parser, stream) == [("message", "", "1"), ("message", '{"a":1}', "2")]
    assert parser.retry == 100
    assert parser.last_event_id == "2"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_sse_split_anywhere_with_any_line_ending(size: int) -> None:
    stream = (
        b"\xef\xbb\xbfevent: endpoint\r\ndata: /messages?x=1\r\n\r\n"
        b"data: line one\rdata: line two\r\r"
        b"id: 7\ndata: x\n\n"
    )
    parser = SSEParser(1024)
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert feed_all(parser, *chunks) == [
        ("endpoint", "/messages?x=1", None),
        ("message", "line one\nline two", None),
        ("message", "x", "7"),
    ]


def test_sse_ignores_bad_fields_and_keeps_the_last_id() -> None:
    parser = SSEParser(1024, last_event_id="start")
    events = feed_all(parser, b"retry: soon\nid: a\0b\nfoo: bar\ndata\n\n")
    assert events == [("message", "", "start")]
    assert parser.retry is None


def test_sse_limits() -> None:
    with pytest.raises(SSEError):
        SSEParser(10).feed(b"data: " + b"x" * 20)
    parser = SSEParser(10)
    parser.feed(b"data: xxx\n")
    parser.feed(b"data: xxx\n")
    with pytest.raises(SSEError):
        parser.feed(b"data: xxx\n")


def test_sse_a_long_line_in_many_chunks_is_scanned_once() -> None:
    """8 MiB of one event's data in 4 KiB chunks: linear work (rescanning the buffer at every chunk took
    seconds of the event loop for a 16 MiB event, stalling every other session of the gateway)."""
    parser = SSEParser(16 * 1024 * 1024)
    line = b"data: " + b"x" * (8 * 1024 * 1024) + b"\n\n"
    started = time.perf_counter()
    events = feed_all(parser, *(line[i : i + 4096] for i in range(0, len(line), 4096)))
    assert time.perf_counter() - started < 2.0
    assert [(kind, len(data)) for kind, data, _ in events] == [("message", 8 * 1024 * 1024)]


def test_config_repr_hides_credentials() -> None:
    config = UpstreamConfig(
        name="u",
        transport="stdio",
        headers={"Authorization": "Bearer s3cret"},
        env={"TOKEN": "s3cret"},
        ca_bundle="PEM",
    )
    assert "s3cret" not in repr(config)
    assert "PEM" not in repr(config)
    assert config == UpstreamConfig(
        name="u",
        transport="stdio",
        headers={"Authorization": "Bearer s3cret"},
        env={"TOKEN": "s3cret"},
        ca_bundle="PEM",
    )


def test_factory() -> None:
    for transport in TRANSPORTS:
        client = create_client(UpstreamConfig(name="u", transport=transport, url="http://x/", command="x"))
        assert not client.connected
        assert client.initialize_result is None
    with pytest.raises(ValueError, match="unknown upstream transport"):
        create_client(UpstreamConfig(name="u", transport="carrier-pigeon"))


def test_the_package_imports_no_django() -> None:
    import ast
    from pathlib import Path

    import transports.protocol.upstream as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "django" for name in names), path


# ---- 2026-07-28 helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
        ("us west 1", "us west 1"),
        ("", ""),
    ],
)
def test_header_values_are_encoded_as_the_specification_shows(value: str, encoded: str) -> None:
    """streamable-http, "Value Encoding" (the table of examples)."""
    assert headers.encode_value(value) == encoded


def test_x_mcp_header_annotations() -> None:
    """streamable-http, "Schema Extension": what makes an annotation valid."""

    def schema(**properties: dict[str, object]) -> dict[str, object]:
        return {"type": "object", "properties": properties}

    nested = schema(outer={"type": "object", "properties": {"inner": {"type": "integer", "x-mcp-header": "Inner"}}})
    assert headers.param_headers(nested) == ((("outer", "inner"), "Inner"),)
    assert headers.param_headers(schema(plain={"type": "string"})) == ()
    assert headers.param_headers({"type": "object"}) == ()
    invalid = [
        schema(v={"type": "string", "x-mcp-header": ""}),
        schema(v={"type": "string", "x-mcp-header": "My Region"}),
        schema(v={"type": "string", "x-mcp-header": "Région"}),
        schema(v={"type": "string", "x-mcp-header": "A:B"}),
        schema(v={"type": "number", "x-mcp-header": "V"}),
        schema(v={"type": "object", "x-mcp-header": "V"}),
        schema(a={"type": "string", "x-mcp-header": "Same"}, b={"type": "string", "x-mcp-header": "same"}),
        schema(v={"type": "array", "items": {"type": "string", "x-mcp-header": "V"}}),
        {"type": "object", "anyOf": [schema(v={"type": "string", "x-mcp-header": "V"})]},
        {"type": "string", "x-mcp-header": "Root"},
    ]
    for case in invalid:
        assert headers.param_headers(case) is None, case
    annotations = headers.param_headers(
        schema(
            r={"type": "string", "x-mcp-header": "Region"},
            n={"type": "integer", "x-mcp-header": "N"},
            b={"type": ["boolean", "null"], "x-mcp-header": "B"},
        )
    )
    assert annotations is not None
    assert headers.param_values(annotations, {"r": " x", "n": 7, "b": True}) == {
        "Mcp-Param-Region": "=?base64?IHg=?=",
        "Mcp-Param-N": "7",
        "Mcp-Param-B": "true",
    }
    assert headers.param_values(annotations, {"r": None, "n": 2**60}) == {}


def test_extra_headers_never_replace_protected_or_configured_ones() -> None:
    sent = {"Mcp-Method": "tools/call"}
    headers.add_extra(
        sent,
        {
            "mcp-method": "x",
            "Authorization": "y",
            "X-Api-Key": "z",
            "Mcp-Param-A": "1",
            "Bad Name": "v",
            "X-B": "1\r\n2",
        },
        {"X-Api-Key": "configured"},
    )
    assert sent == {"Mcp-Method": "tools/call", "Mcp-Param-A": "1"}


@pytest.mark.parametrize(
    ("code", "data", "http", "verdict"),
    [
        (-32022, {"supported": ["2026-07-28"], "requested": "2099-01-01"}, True, ("retry", "2026-07-28")),
        (-32022, {"supported": ["2099-01-01"]}, True, ("modern-refused", None)),
        (-32022, {"supported": ["2025-11-25"]}, False, ("legacy", None)),
        (-32022, None, True, ("legacy", None)),
        (-32020, None, True, ("modern-refused", None)),
        (-32020, None, False, ("legacy", None)),
        (-32021, None, True, ("modern-refused", None)),
        (-32601, None, False, ("legacy", None)),
        (-32000, None, True, ("legacy", None)),
        (-32602, None, False, ("legacy", None)),
    ],
)
def test_what_an_error_to_the_probe_means(code: int, data: object, http: bool, verdict: tuple[str, str | None]) -> None:
    """versioning, "Backward Compatibility": only a recognised modern error keeps the client modern; on stdio
    the fallback is not keyed to any one code."""
    assert stateless.probe_verdict(UpstreamError(code, "x", data), http=http) == verdict


def test_the_result_cache() -> None:
    now = [0.0]
    cache = stateless.ResultCache(max_entries=2, max_bytes=100, clock=lambda: now[0])
    key = stateless.ResultCache.key("tools/list", {"cursor": "a", "_meta": {"progressToken": 1}})
    assert key == stateless.ResultCache.key("tools/list", {"cursor": "a"})
    assert stateless.ResultCache.key("tools/call", {}) is None
    assert key is not None
    cache.put(key, {"tools": [], "ttlMs": 1000})
    assert cache.get(key) == {"tools": [], "ttlMs": 1000}
    now[0] = 1.0
    assert cache.get(key) is None  # expired
    for ttl in (0, -5, True, "10"):
        cache.put(key, {"tools": [], "ttlMs": ttl})
        assert cache.get(key) is None
    cache.put(key, {"tools": ["x" * 200], "ttlMs": 1000})  # too large
    assert cache.get(key) is None
    cache.put(key, {"resultType": "input_required", "ttlMs": 1000})
    assert cache.get(key) is None
    keys = [stateless.ResultCache.key("resources/read", {"uri": f"u{i}"}) for i in range(3)]
    for k in keys:
        assert k is not None
        cache.put(k, {"contents": [], "ttlMs": 1000})
    assert len(cache) == 2  # the least recently used went
    assert keys[0] is not None
    assert cache.get(keys[0]) is None
    cache.drop("resources/read", "u1")
    assert len(cache) == 1


def test_the_envelope() -> None:
    """basic/index, "_meta": required protocol version and client capabilities, client info, optional
    log level; the caller's own `_meta` stays, and its valid log level wins."""
    config = UpstreamConfig(name="u", transport="stdio", client_capabilities={"sampling": {}})
    params = {"name": "t", "_meta": {"progressToken": 1, "io.modelcontextprotocol/logLevel": "nonsense"}}
    wrapped = stateless.enveloped(params, version="2026-07-28", config=config, log_level="info")
    assert wrapped["_meta"] == {
        "progressToken": 1,
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway", "version": "0.1.0"},
        "io.modelcontextprotocol/logLevel": "info",
    }
    assert params["_meta"] == {"progressToken": 1, "io.modelcontextprotocol/logLevel": "nonsense"}
    own = {"_meta": {"io.modelcontextprotocol/logLevel": "error"}}
    assert stateless.enveloped(own, version="v", config=config, log_level="info")["_meta"][META_LOG_LEVEL] == "error"
    assert strip_envelope(wrapped) == {"name": "t", "_meta": {"progressToken": 1}}
    assert strip_envelope({"_meta": {"io.modelcontextprotocol/protocolVersion": "x"}}) == {}
    untouched = {"_meta": {"progressToken": 2}}
    assert strip_envelope(untouched) is untouched


def test_describe_server_in_both_eras() -> None:
    discover = {
        "supportedVersions": ["2099-01-01", "2026-07-28"],
        "capabilities": {"tools": {}},
        "instructions": "hi",
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "m", "version": "1"}},
    }
    assert describe_server("modern", discover) == {
        "protocol_version": "2026-07-28",
        "server_info": {"name": "m", "version": "1"},
        "capabilities": {"tools": {}},
        "instructions": "hi",
    }
    initialize = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "l", "version": "2"}}
    assert describe_server("legacy", initialize)["protocol_version"] == "2025-06-18"
    assert describe_server("legacy", initialize)["server_info"] == {"name": "l", "version": "2"}
    assert describe_server(None, None) == {
        "protocol_version": None,
        "server_info": {},
        "capabilities": {},
        "instructions": None,
    }
