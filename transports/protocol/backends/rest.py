"""The REST backend: a tools/call becomes one HTTP request (docs/tool-backends.md "REST").

Every REST tool of the process shares one aiohttp session and its connection pool (made lazily in the
running event loop, with the outbound address policy at connect time). The tool's timeout bounds the
whole call: the token request, every attempt and the pauses between them. Idempotent methods are
retried with exponential backoff on connection failures and 429/502/503/504 (Retry-After honoured when
it fits in the time left); every retry is reported as progress. A cancelled call closes its connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict

from transports.protocol.backends import outbound
from transports.protocol.backends.base import CallContext, ToolBackend
from transports.protocol.backends.rest_auth import Applied, Authenticator, AuthFailed, TokenCache
from transports.protocol.backends.rest_request import ArgumentError, BuiltRequest, RestSpec, SpecCache, build_request
from transports.protocol.backends.rest_response import failure_result, response_result
from transports.protocol.backends.results import error_result
from transports.protocol.catalog import ToolEntry

RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.1  # seconds before the first retry; doubled for each next one
BACKOFF_CAP = 2.0
MAX_RESPONSE_SETTING = "GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES"


@lru_cache(maxsize=32)
def _ca_context(pem: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pem)


def ssl_option(spec: RestSpec) -> ssl.SSLContext | bool:
    """aiohttp's per-request ``ssl=``: no verification, the default trust store, or the tool's CA bundle
    (one context per bundle, so pooled connections are reused)."""
    if not spec.verify_tls:
        return False
    if spec.ca_bundle:
        return _ca_context(spec.ca_bundle)
    return True


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RestBackend(ToolBackend):
    """Tools of integration type ``rest`` (including those imported from OpenAPI)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 5,
        max_connections: int = 100,
        resolver_factory: Callable[[], AbstractResolver] | None = None,
        exempt: Collection[tuple[str, int]] = (),
        token_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_private = allow_private
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self.max_connections = max_connections
        # Tests: a resolver to stand in for DNS, and (address, port) pairs reachable though private.
        self.resolver_factory = resolver_factory
        self.exempt = tuple(exempt)
        self.auth = Authenticator(TokenCache(token_clock))
        self._specs = SpecCache()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def available(self, tool: ToolEntry) -> bool:
        url = tool.backend_config.get("url")
        return isinstance(url, str) and bool(url)

    def session(self) -> aiohttp.ClientSession:
        """The shared session, made in (and for) the running loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = outbound.new_session(
                allow_private=self.allow_private,
                max_connections=self.max_connections,
                resolver=self.resolver_factory() if self.resolver_factory else None,
                exempt=self.exempt,
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the pool (when it belongs to the running loop)."""
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    async def call(self, arguments: dict[str, Any], context: CallContext) -> dict[str, Any]:
        try:
            spec = self._specs.get(context.tool.backend_config)
        except (ValueError, TypeError) as exc:  # a definition saved past the registry's rules
            return error_result(f"The tool's REST definition cannot be used ({exc}); correct and save it again.")
        try:
            tls = ssl_option(spec)
        except (ssl.SSLError, ValueError) as exc:
            return error_result(f"The tool's ca_bundle cannot be loaded: {exc}")
        run = _Call(self, spec, arguments, context, tls)
        timeout = asyncio.timeout(context.timeout)
        try:
            async with timeout:
                return await run.run(timeout)
        except TimeoutError:
            if not timeout.expired():
                raise
            return error_result(run.timeout_message(context.timeout))


class _Call:
    """One tools/call: the attempts and what they are reported as."""

    def __init__(
        self, backend: RestBackend, spec: RestSpec, arguments: dict[str, Any], context: CallContext, tls: Any
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.arguments = arguments
        self.context = context
        self.tls = tls
        self.limit = min(spec.max_response_bytes or backend.max_response_bytes, backend.max_response_bytes)
        self.attempts_allowed = 1 + spec.retries if spec.idempotent else 1
        self.attempt = 0
        self.secret_params: frozenset[str] = frozenset()
        self.request: BuiltRequest | None = None  # the last attempt's, named in messages

    @property
    def shown(self) -> str:
        """The request as messages name it (secrets masked); made only when a message needs it."""
        if self.request is None:
            return f"{self.spec.method} {self.spec.url}"
        return f"{self.request.method} {outbound.masked(self.request.url, self.secret_params)}"

    async def run(self, timeout: asyncio.Timeout) -> dict[str, Any]:
        session = self.backend.session()
        refreshed = False
        while True:
            self.attempt += 1
            try:
                applied = await self.backend.auth.apply(
                    self.spec.auth,
                    self.context.tool.credentials,
                    session=session,
                    ssl=self.tls,
                )
                self.secret_params = applied.secret_params
                request = build_request(self.spec, self.arguments, extra_query=applied.query)
            except (AuthFailed, ArgumentError) as exc:
                return error_result(exc.message)
            self.request = request
            try:
                response = await outbound.send(
                    session,
                    request.method,
                    request.url,
                    headers=_with(request.headers, applied),
                    body=request.body,
                    ssl=self.tls,
                    max_bytes=self.limit,
                    max_redirects=self.backend.max_redirects,
                    sensitive_headers=applied.sensitive_headers,
                    secret_params=self.secret_params,
                )
            except outbound.ConnectionFailed as exc:
                if await self._pause(timeout, None, exc.message):
                    continue
                return error_result(exc.message + self._after())
            except outbound.ResponseTooLarge:
                return error_result(self._too_large())
            except outbound.OutboundError as exc:  # a refused address or redirect, a TLS failure
                return error_result(exc.message)
            if response.status == 401 and not refreshed and self.backend.auth.refused(applied):
                refreshed = True  # the API refused an OAuth token it may have revoked: one more, with a new one
                self.attempt -= 1
                continue
            if response.status in RETRY_STATUSES and await self._pause(
                timeout, retry_after(response.headers.get("Retry-After")), f"HTTP {response.status}"
            ):
                continue
            if not response.ok:
                return failure_result(response, self.secret_params, self.attempt)
            return response_result(
                response, tool=self.context.tool, extract=self.spec.extract, secret_params=self.secret_params
            )

    async def _pause(self, timeout: asyncio.Timeout, asked: float | None, why: str) -> bool:
        """Wait before the next attempt, when one is allowed and fits in the time left."""
        if self.attempt >= self.attempts_allowed:
            return False
        delay = asked if asked is not None else min(BACKOFF_BASE * 2 ** (self.attempt - 1), BACKOFF_CAP)
        deadline = timeout.when()
        if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
            return False  # the answer so far says more than a timeout would
        await self.context.progress(
            self.attempt, self.attempts_allowed, f"{why}: retrying {self.shown} (attempt {self.attempt + 1})"
        )
        await asyncio.sleep(delay)
        return True

    def _after(self) -> str:
        return f" (after {self.attempt} attempts)" if self.attempt > 1 else ""

    def _too_large(self) -> str:
        tool_bound = self.spec.max_response_bytes
        setting = (
            "the tool's max_response_bytes"
            if tool_bound is not None and tool_bound < self.backend.max_response_bytes
            else MAX_RESPONSE_SETTING
        )
        return f"The response to {self.shown} is larger than {self.limit} bytes, the limit set by {setting}."

    def timeout_message(self, seconds: float) -> str:
        return f"{self.shown} did not finish within {seconds:g} seconds (the tool's timeout){self._after()}."


def _with(headers: CIMultiDict[str], applied: Applied) -> CIMultiDict[str]:
    if not applied.headers:
        return headers
    merged = headers.copy()
    for name, value in applied.headers.items():
        merged[name] = value
    return merged
