"""OpenTelemetry traces client -> gateway -> upstream (docs/governance.md, "Logs, metrics and traces").

A live gateway with GATEWAY_OTEL_ENDPOINT exports to an OTLP/HTTP collector this test runs (a small HTTP
server decoding the protobuf requests); the client's traceparent is the parent of the gateway's SERVER
span, whose child is the CLIENT span around the upstream call; the upstream received that span's
context in the request's _meta."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.fixtures.servers import start_upstream
from tests.live_gateway import LiveGateway, start_live_gateway
from transports.protocol import tracing

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
SERVER, CLIENT = 2, 3  # Span.SpanKind values


class Collector(ThreadingHTTPServer):
    """Accepts POST /v1/traces (OTLP/HTTP protobuf) and keeps the spans."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []
        self.paths: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.paths.append(self.path)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.server.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _post(gateway: LiveGateway, body: dict, headers: dict[str, str]) -> tuple[dict[str, str], dict]:
    request = urllib.request.Request(gateway.mcp_url(), data=json.dumps(body).encode(), method="POST")
    for name, value in {
        "Authorization": f"Bearer {gateway.token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **headers,
    }.items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read().decode()
        answer = {}
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            data = [line[6:] for line in raw.splitlines() if line.startswith("data: {")]
            answer = json.loads(data[-1])
        elif raw:
            answer = json.loads(raw)
        return dict(response.headers), answer


def _until(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.backend_independent
def test_a_call_is_traced_from_the_client_through_the_gateway_to_the_upstream(tmp_path):
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    upstream = start_upstream("streamable-http")
    try:
        with start_live_gateway(
            tmp_path, GATEWAY_OTEL_ENDPOINT=collector.endpoint, OTEL_BSP_SCHEDULE_DELAY="100"
        ) as gateway:
            status, answer = gateway.api(
                "POST", "/api/gateways", {"name": "up", "transport": "streamable-http", "url": upstream.url}
            )
            assert status == 201, answer
            version = {"MCP-Protocol-Version": "2025-06-18"}
            headers, _ = _post(
                gateway,
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "tracing-test", "version": "1"},
                    },
                },
                {},
            )
            session = {"Mcp-Session-Id": headers["Mcp-Session-Id"], **version}
            _post(gateway, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
            _, listed = _post(gateway, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
            (echo,) = [t["name"] for t in listed["result"]["tools"] if t["name"].endswith("echo")]
            call = {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": echo, "arguments": {"message": "traced"}},
            }
            _, answer = _post(gateway, call, {**session, "traceparent": TRACEPARENT})
            assert answer["result"]["content"][0]["text"].endswith("traced"), answer

            def exported() -> tuple[Any, Any] | None:
                server = [s for s in collector.spans if s.kind == SERVER and s.trace_id.hex() == CLIENT_TRACE]
                client = [
                    s
                    for s in collector.spans
                    if s.kind == CLIENT and s.trace_id.hex() == CLIENT_TRACE and s.name.startswith("tools/call")
                ]
                return (server[0], client[0]) if server and client else None

            server_span, client_span = _until("the gateway's spans at the collector", exported)
            assert collector.paths[0] == "/v1/traces"
            assert server_span.parent_span_id.hex() == CLIENT_SPAN
            assert server_span.name == f"tools/call {echo}"
            assert client_span.parent_span_id == server_span.span_id
            attributes = {a.key: a.value.string_value for a in client_span.attributes}
            assert attributes["mcp.gateway"] == "up"
            assert attributes["mcp.method.name"] == "tools/call"

            _, journal = _post(
                gateway,
                {
                    "jsonrpc": "2.0",
                    "id": 4,
                    "method": "tools/call",
                    "params": {"name": echo.replace("echo", "test_journal"), "arguments": {}},
                },
                session,
            )
            entries = [json.loads(line) for line in journal["result"]["content"][0]["text"].splitlines() if line]
            traced = [e for e in entries if e.get("event") == "tools/call" and e.get("name") == "echo"]
            expected = f"00-{CLIENT_TRACE}-{client_span.span_id.hex()}-01"
            assert traced
            assert traced[-1]["traceparent"] == expected
    finally:
        upstream.stop()
        collector.shutdown()


def test_nothing_is_set_up_without_an_endpoint():
    """The test process (no GATEWAY_OTEL_ENDPOINT) has no tracer: the call sites check one flag."""
    assert tracing.active is False
    assert tracing._tracer is None
