"""A REST tool's definition read once (``RestSpec``) and a call's arguments mapped onto an HTTP request:
path through the RFC 6570 URL template, query, headers and a JSON, form or raw body
(docs/tool-backends.md "REST").

The registry checks a definition when it is saved (``registry/tool_kinds/rest.py``); here a definition
is only read, with the documented defaults for what it leaves out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import uritemplate
from multidict import CIMultiDict
from yarl import URL

from transports.protocol.backends.outbound import origin

QUERY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})  # unlisted arguments go to the query
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
DEFAULT_RAW_CONTENT_TYPE = "application/octet-stream"
_SPEC_CACHE_SIZE = 1024


class ArgumentError(Exception):
    """The arguments cannot make a request (a header value with a line break, a path that changes the
    host); ``message`` names the argument."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RestSpec:
    """A REST tool's ``backend_config`` with its defaults."""

    url: str
    template: uritemplate.URITemplate
    origin: tuple[str, str | None, int | None]
    method: str
    headers: tuple[tuple[str, str], ...]
    params: dict[str, tuple[str, str]]  # argument -> (in, wire name)
    body_encoding: str
    body_argument: str | None
    content_type: str | None
    auth: dict[str, Any]
    retries: int
    verify_tls: bool
    ca_bundle: str
    extract: str | None
    max_response_bytes: int | None

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS


@lru_cache(maxsize=_SPEC_CACHE_SIZE)
def _template(url: str) -> tuple[uritemplate.URITemplate, tuple[str, str | None, int | None]]:
    template = uritemplate.URITemplate(url)
    # Variables may not reach the scheme or host (the registry refuses that), so the URL expanded with
    # nothing names the one origin every call must go to.
    return template, origin(URL(template.expand({}), encoded=True))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_spec(config: dict[str, Any]) -> RestSpec:
    """The spec of ``config`` (defaults filled in)."""
    url = str(config.get("url", ""))
    template, fixed_origin = _template(url)
    body = _object(config.get("body"))
    params: dict[str, tuple[str, str]] = {}
    for name, entry in (config.get("params") or {}).items():
        if isinstance(entry, dict):
            params[name] = (str(entry.get("in", "query")), str(entry.get("name") or name))
    retries = config.get("retries", 2)
    limit = config.get("max_response_bytes")
    return RestSpec(
        url=url,
        template=template,
        origin=fixed_origin,
        method=str(config.get("method") or "GET").upper(),
        headers=tuple((str(k), str(v)) for k, v in (config.get("headers") or {}).items()),
        params=params,
        body_encoding=str(body.get("encoding") or "json"),
        body_argument=body.get("argument") or None,
        content_type=body.get("content_type") or None,
        auth=_object(config.get("auth")) or {"type": "none"},
        retries=retries if isinstance(retries, int) and 0 <= retries <= 5 else 2,
        verify_tls=config.get("verify_tls", True) is not False,
        ca_bundle=str(config.get("ca_bundle") or ""),
        extract=config.get("extract") or None,
        max_response_bytes=limit if isinstance(limit, int) and limit > 0 else None,
    )


class SpecCache:
    """Specs by config object: one parse per catalog snapshot entry, not per call."""

    def __init__(self, size: int = _SPEC_CACHE_SIZE) -> None:
        self._size = size
        # id -> (the config, kept alive so its id is not reused, and its spec)
        self._specs: OrderedDict[int, tuple[dict[str, Any], RestSpec]] = OrderedDict()

    def get(self, config: dict[str, Any]) -> RestSpec:
        hit = self._specs.get(id(config))
        if hit is not None and hit[0] is config:
            self._specs.move_to_end(id(config))
            return hit[1]
        spec = parse_spec(config)
        self._specs[id(config)] = (config, spec)
        if len(self._specs) > self._size:
            self._specs.popitem(last=False)
        return spec


@dataclass
class BuiltRequest:
    method: str
    url: URL
    headers: CIMultiDict[str]
    body: bytes | None


def as_text(value: Any) -> str:
    """An argument's value on the wire: strings as they are, anything else as JSON text."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _template_value(value: Any) -> Any:
    """RFC 6570 expands strings, lists and maps; everything else is sent as its JSON text."""
    if isinstance(value, list):
        return [as_text(item) for item in value]
    if isinstance(value, dict):
        return {str(k): as_text(v) for k, v in value.items()}
    return as_text(value)


def build_request(spec: RestSpec, arguments: dict[str, Any], *, extra_query: list[tuple[str, str]]) -> BuiltRequest:
    """The request ``arguments`` make (``extra_query``: what authentication adds to the query)."""
    variables = set(spec.template.variable_names)
    path: dict[str, Any] = {}
    query: list[tuple[str, str]] = []
    headers: CIMultiDict[str] = CIMultiDict(spec.headers)
    body_fields: dict[str, Any] = {}
    for name, value in arguments.items():
        if name == spec.body_argument:
            continue  # the whole body (see _body)
        where, wire = spec.params.get(name) or (
            "path" if name in variables else "query" if spec.method in QUERY_METHODS else "body",
            name,
        )
        if value is None and where != "body":
            continue  # undefined, as RFC 6570 treats null (a JSON body keeps its nulls)
        if where == "path":
            path[wire] = _template_value(value)
        elif where == "query":
            query += [(wire, as_text(item)) for item in _items(value)]
        elif where == "header":
            text = as_text(value)
            if any(ch in text for ch in "\r\n\0"):
                raise ArgumentError(f"Argument {name!r} cannot be sent in the {wire} header: it has a line break.")
            headers[wire] = text
        else:
            body_fields[wire] = value

    expanded = spec.template.expand(path).partition("#")[0]
    try:
        target = origin(URL(expanded, encoded=True))
    except ValueError:
        raise ArgumentError(f"The arguments make an invalid URL: {expanded[:200]}") from None
    if target != spec.origin:
        raise ArgumentError("The arguments would send the request to another host than the tool's URL names; refused.")
    if query or extra_query:
        separator = "" if expanded.endswith(("?", "&")) else "&" if "?" in expanded else "?"
        expanded += separator + urlencode(query + extra_query, quote_via=quote)
    body, content_type = _body(spec, body_fields, arguments)
    if body is not None and content_type and "Content-Type" not in headers:
        headers["Content-Type"] = content_type
    return BuiltRequest(spec.method, URL(expanded, encoded=True), headers, body)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _body(spec: RestSpec, fields: dict[str, Any], arguments: dict[str, Any]) -> tuple[bytes | None, str | None]:
    if spec.body_argument is not None:
        if spec.body_argument not in arguments:
            return None, None
        value = arguments[spec.body_argument]
        if spec.body_encoding == "raw":
            data = value.encode() if isinstance(value, str) else orjson.dumps(value)
            return data, spec.content_type or DEFAULT_RAW_CONTENT_TYPE
        if spec.body_encoding == "form" and isinstance(value, dict):
            fields = value
        else:
            return orjson.dumps(value), spec.content_type or "application/json"
    if not fields:
        return None, None
    if spec.body_encoding == "form":
        pairs = [(k, as_text(item)) for k, v in fields.items() if v is not None for item in _items(v)]
        return urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    return orjson.dumps(fields), spec.content_type or "application/json"
