"""OpenTelemetry traces of MCP requests: client -> gateway -> upstream (docs/governance.md).

Off by default: until ``setup()`` runs (the Django side calls it when GATEWAY_OTEL_ENDPOINT is set)
nothing of OpenTelemetry is imported or created, and every call site pays one check of ``active``
(no spans of a no-op tracer on the call path).

When on:

- the core's request entry opens a SERVER span per MCP request (``server_span``), whose parent is the
  W3C trace context of the request: ``params._meta.traceparent`` (and ``tracestate``) when the message
  carries one, else the HTTP request's ``traceparent`` header;
- each request the gateway sends an upstream inside such a span gets a CLIENT span (``client_span``)
  whose context is passed on in the upstream request's ``params._meta`` and, over HTTP, in its
  ``traceparent``/``tracestate`` headers. Upstream requests outside any MCP request (health checks,
  catalog syncs) are not traced;
- spans leave through a BatchSpanProcessor and the OTLP/HTTP exporter to the endpoint (off the call
  path, in the SDK's own thread).

No Django here: the protocol core imports this module.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

# One check at every call site; True once setup() has installed a tracer.
active = False

_tracer: Any = None
_provider: Any = None
_propagator: Any = None
_trace: Any = None  # the opentelemetry.trace module, once imported
TRACE_KEYS = ("traceparent", "tracestate")


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector endpoint (``http://collector:4318`` -> ``.../v1/traces``)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def setup(endpoint: str, service_name: str, *, exporter: Any = None) -> None:
    """Export spans to ``endpoint`` (OTLP/HTTP) as ``service_name``; ``exporter`` replaces the OTLP
    exporter (tests). Safe to call again: the previous provider is shut down first."""
    global active, _tracer, _provider, _propagator, _trace
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    shutdown()
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Our own provider, not the global one: nothing else in the process is traced by accident.
    _provider, _tracer, _trace = provider, provider.get_tracer("mcp-gateway"), trace
    _propagator = TraceContextTextMapPropagator()
    active = True
    atexit.register(shutdown)


def shutdown() -> None:
    """Stop tracing; spans not yet exported are sent first."""
    global active, _tracer, _provider
    provider = _provider
    active, _tracer, _provider = False, None, None
    if provider is not None:
        provider.shutdown()


def flush(timeout_millis: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def _carrier(params: Any, headers: Mapping[str, str] | None) -> dict[str, str]:
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("traceparent"), str):
        return {key: meta[key] for key in TRACE_KEYS if isinstance(meta.get(key), str)}
    if headers and "traceparent" in headers:
        return {key: headers[key] for key in TRACE_KEYS if key in headers}
    return {}


@contextmanager
def server_span(
    message: Mapping[str, Any], headers: Mapping[str, str] | None, attributes: Mapping[str, Any]
) -> Iterator[Any]:
    """The SERVER span of one MCP request (current while the block runs), its parent taken from the
    request's trace context."""
    method = message.get("method", "")
    params = message.get("params")
    carrier = _carrier(params, headers)
    parent = _propagator.extract(carrier) if carrier else None
    name = method
    if method == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
        name = f"{method} {params['name']}"
    span_attributes = {"rpc.system": "jsonrpc", "mcp.method.name": method, **attributes}
    request_id = message.get("id")
    if request_id is not None:
        span_attributes["jsonrpc.request.id"] = str(request_id)
    with _tracer.start_as_current_span(
        name, context=parent, kind=_trace.SpanKind.SERVER, attributes=span_attributes
    ) as span:
        yield span


def end_server_span(span: Any, outcome: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Mark the span with the request's outcome ("ok", "error", "cancelled")."""
    span.set_attribute("mcp.outcome", outcome)
    if attributes:
        span.set_attributes(attributes)
    if outcome == "error":
        span.set_status(_trace.Status(_trace.StatusCode.ERROR))


def trace_id(span: Any) -> str:
    """The span's trace id as 32 hex digits ("" for none)."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


@contextmanager
def client_span(upstream: str, transport: str, method: str) -> Iterator[dict[str, str] | None]:
    """A CLIENT span around one upstream request when it is part of a traced MCP request: yields the
    W3C headers to pass on (``traceparent``, maybe ``tracestate``), or None (no span: not traced)."""
    if not _trace.get_current_span().get_span_context().is_valid:
        yield None
        return
    attributes = {
        "rpc.system": "jsonrpc",
        "mcp.method.name": method,
        "mcp.gateway": upstream,
        "mcp.transport": transport,
    }
    with _tracer.start_as_current_span(
        f"{method} {upstream}", kind=_trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        try:
            yield carrier
        except BaseException as exc:
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
            raise


def with_meta(params: dict[str, Any] | None, carrier: Mapping[str, str]) -> dict[str, Any]:
    """``params`` (not changed) with the trace context in a copy of its ``_meta``."""
    params = dict(params or {})
    meta = params.get("_meta")
    params["_meta"] = {**(meta if isinstance(meta, dict) else {}), **carrier}
    return params
