"""aiohttp plumbing shared by the HTTP-based upstream clients (Streamable HTTP, legacy SSE, WebSocket)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import orjson

from transports.protocol.upstream.base import UpstreamConfig, UpstreamError, UpstreamUnavailable

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
_ERROR_BODY_LIMIT = 64 * 1024

# Requests that may be sent twice without harm. A POST of one of these (or of any notification or
# response) is repeated once when a pooled keep-alive connection turns out to be closed before an answer
# arrived; aiohttp does that by itself only for idempotent HTTP methods, and POST is not one.
REPEATABLE = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
    }
)


def repeatable(message: dict[str, Any]) -> bool:
    """Whether sending this message twice is harmless (not a request, or a read-only one)."""
    return "id" not in message or "method" not in message or message["method"] in REPEATABLE


def ssl_option(config: UpstreamConfig) -> ssl.SSLContext | bool:
    """What aiohttp's `ssl=` gets: no verification, the default trust store, or the given CA bundle."""
    if not config.verify_tls:
        return False
    if config.ca_bundle:
        try:
            return ssl.create_default_context(cadata=config.ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise UpstreamUnavailable(f"{config.name}: the CA bundle cannot be loaded: {exc}") from None
    return True


def new_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """One pooled keep-alive session per upstream client; credentials ride as default headers."""
    connector = aiohttp.TCPConnector(
        limit=config.max_connections,
        keepalive_timeout=config.keepalive_timeout,
        ssl=ssl_option(config),
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(config.headers),
        # Deadlines come from the caller (asyncio.timeout per request); here only the TCP/TLS connect.
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=config.connect_timeout),
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # keeps load-balancer affinity cookies, even for IP hosts
        raise_for_status=False,
    )


def content_type(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("Content-Type", "").partition(";")[0].strip().lower()


async def read_body(response: aiohttp.ClientResponse, limit: int, name: str) -> bytes:
    """The whole body, refusing more than `limit` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise UpstreamUnavailable(f"{name}: response of {response.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise UpstreamUnavailable(f"{name}: response exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def loads(data: bytes | str, name: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"{name}: the upstream sent invalid JSON") from None


async def status_error(response: aiohttp.ClientResponse, name: str, what: str) -> Exception:
    """The exception for an HTTP error status: a JSON-RPC error in the body becomes UpstreamError
    (except for authentication and server errors, which make the upstream unavailable)."""
    status = response.status
    try:
        body = await read_body(response, _ERROR_BODY_LIMIT, name)
        payload = orjson.loads(body) if body else None
    except (UpstreamUnavailable, orjson.JSONDecodeError, aiohttp.ClientError, OSError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    detail = f"HTTP {status} {response.reason or ''}".strip()
    if isinstance(error, dict) and isinstance(error.get("code"), int):
        text = error["message"] if isinstance(error.get("message"), str) else ""
        if status in (401, 403) or status >= 500:
            return UpstreamUnavailable(f"{name}: {what}: {detail}: {text}", status=status)
        return UpstreamError(error["code"], text, error.get("data"))
    return UpstreamUnavailable(f"{name}: {what}: {detail}", status=status)
