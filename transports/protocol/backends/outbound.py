"""Outbound HTTP for REST tools and for OpenAPI documents fetched from a URL (docs/tool-backends.md
"Outbound safety").

The address policy is enforced where the connection is made, not where the URL is read: the pool's
resolver drops (or refuses) private addresses a name resolves to, and its socket factory refuses any
private address it is asked to connect to (IP literals never reach a resolver). A name that resolved to
a public address when a tool was saved and to 127.0.0.1 now is refused now: no DNS-rebinding window.
Redirects are followed here, hop by hop through the same pool, so every hop meets the same checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

ALLOW_PRIVATE_SETTING = "GATEWAY_OUTBOUND_ALLOW_PRIVATE"
MAX_REDIRECTS_SETTING = "GATEWAY_OUTBOUND_MAX_REDIRECTS"
ERROR_BODY_BYTES = 64 * 1024  # what is kept of a failing response's body, for its excerpt
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "mcp-gateway"
# Query parameters whose values are never shown in a message.
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "signature", "sig", "auth", "credential")


class OutboundError(Exception):
    """An outbound request that could not be made or answered; ``message`` is for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AddressRefused(OutboundError):
    """The address to connect to is private, loopback, link-local, multicast, reserved or unspecified."""


class ResponseTooLarge(OutboundError):
    """The response body is larger than the bound."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ConnectionFailed(OutboundError):
    """The server could not be reached, or dropped the connection: worth retrying for idempotent requests."""


# -- the address policy --------------------------------------------------------------------------------


def address_kind(address: str) -> str | None:
    """Why ``address`` (an IP) is not public ("loopback", "private"...), or None when it is."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return "unparseable"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    for attribute, kind in (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attribute):
            return kind
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges and the like
        return "non-public"
    return None


def refusal(address: str, kind: str, host: str | None = None) -> AddressRefused:
    article = "an" if kind[0] in "aeiou" else "a"
    subject = f"{host} resolves to {address}, which is" if host and host != address else f"{address} is"
    return AddressRefused(
        f"Refused to connect: {subject} {article} {kind} address. Outbound requests only reach public "
        f"addresses unless {ALLOW_PRIVATE_SETTING}=true."
    )


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and keeps only public addresses; refuses a name with none left."""

    def __init__(self, inner: AbstractResolver, exempt: Collection[tuple[str, int]] = ()) -> None:
        self._inner = inner
        self._exempt = frozenset(exempt)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if (r["host"], port) in self._exempt or address_kind(r["host"]) is None]
        if results and not allowed:
            first = results[0]["host"]
            raise refusal(first, address_kind(first) or "private", host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(exempt: Collection[tuple[str, int]] = ()) -> Callable[[Any], socket.socket]:
    """A socket factory for aiohttp that refuses private addresses: the last check before connect()."""
    exempt = frozenset(exempt)

    def make(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address, port = sockaddr[0], sockaddr[1]
        kind = None if (address, port) in exempt else address_kind(address)
        if kind is not None:
            raise refusal(address, kind)
        return socket.socket(family=family, type=type_, proto=proto)

    return make


def new_session(
    *,
    allow_private: bool,
    max_connections: int = 100,
    resolver: AbstractResolver | None = None,
    exempt: Collection[tuple[str, int]] = (),
) -> aiohttp.ClientSession:
    """A pooled session whose connections obey the address policy (call inside the running loop).

    ``exempt`` lists (address, port) pairs reachable even when private; tests use it for their
    loopback API server so that a redirect elsewhere on loopback is still refused."""
    inner = resolver or aiohttp.ThreadedResolver()
    options: dict[str, Any] = {"limit": max_connections, "resolver": inner}
    if not allow_private:
        options["resolver"] = GuardedResolver(inner, exempt)
        options["socket_factory"] = guarded_socket_factory(exempt)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(**options),
        # Deadlines come from the caller's asyncio.timeout, over the whole call.
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),  # one pool serves every tool: no cookie may pass between them
        headers={"User-Agent": USER_AGENT},
        trust_env=False,  # a proxy from the environment would connect on our behalf, past the checks
        raise_for_status=False,
    )


# -- requests --------------------------------------------------------------------------------------------


def masked(url: URL | str, secret_params: Collection[str] = ()) -> str:
    """``url`` fit for a message: no user info, and the values of secret-looking query parameters hidden."""
    if isinstance(url, str):
        text = url
        try:
            url = URL(text)
        except ValueError:
            return text.partition("?")[0]
    if url.user is not None or url.password is not None:
        url = url.with_user(None)
    if not url.raw_query_string:
        return str(url)
    secret = {name.lower() for name in secret_params}
    pairs = [
        (name, "***" if name.lower() in secret or any(word in name.lower() for word in _SECRET_WORDS) else value)
        for name, value in parse_qsl(url.query_string, keep_blank_values=True)
    ]
    return str(url.with_query(None)) + "?" + urlencode(pairs, safe="*")


def origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host, url.port)


@dataclass
class OutboundResponse:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    url: URL  # the last hop's
    method: str  # the last hop's (a 303 turns a POST into a GET)
    truncated: bool = False  # a failing response's body cut to ERROR_BODY_BYTES

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    @property
    def charset(self) -> str:
        for part in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"


async def read_bounded(response: aiohttp.ClientResponse, limit: int, *, strict: bool) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes (after decompression): ResponseTooLarge beyond it when
    ``strict``, else cut there (the second value says whether it was)."""
    if strict and response.content_length is not None and response.content_length > limit:
        raise ResponseTooLarge(f"{response.content_length} bytes", limit=limit)
    if (
        response.content_length is not None
        and response.content_length <= limit
        and not response.headers.get("Content-Encoding")
    ):
        return await response.read(), False  # the common case: a declared size within the bound, read at once
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            if strict:
                raise ResponseTooLarge(f"more than {limit} bytes", limit=limit)
            chunks.append(chunk[: limit - (size - len(chunk))])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    *,
    headers: CIMultiDict[str],
    body: bytes | None,
    ssl: Any,
    max_bytes: int,
    max_redirects: int,
    sensitive_headers: Collection[str] = ("authorization",),
    secret_params: Collection[str] = (),
) -> OutboundResponse:
    """One request, redirects followed hop by hop: only to http(s), at most ``max_redirects``, the
    ``sensitive_headers`` (credentials) left out on any hop to another origin. A 2xx body larger than
    ``max_bytes`` is ResponseTooLarge; other bodies are cut for an excerpt. Connection failures are
    ConnectionFailed; a refused address is AddressRefused."""
    first_origin = origin(url)
    sensitive = {name.lower() for name in sensitive_headers}
    for hop in range(max_redirects + 1):
        if origin(url) != first_origin:
            # For good: a host we were sent to cannot send us back with the credentials to a path it picks.
            headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in sensitive)
        try:
            async with session.request(
                method, url, headers=headers, data=body, ssl=ssl, allow_redirects=False
            ) as response:
                try:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        next_url = _redirect_target(url, location, secret_params)
                        if hop == max_redirects:
                            break
                        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                            method = "GET" if method != "HEAD" else method
                            body = None
                            headers = CIMultiDict((k, v) for k, v in headers.items() if k.lower() != "content-type")
                        url = next_url
                        continue
                    if method == "HEAD":  # its Content-Length describes a body it does not send
                        payload, truncated = b"", False
                    else:
                        limit = max_bytes if response.ok else min(max_bytes, ERROR_BODY_BYTES)
                        payload, truncated = await read_bounded(response, limit, strict=response.ok)
                except BaseException:
                    response.close()  # a half-read response must not go back to the pool
                    raise
                return OutboundResponse(
                    response.status, response.reason or "", response.headers, payload, url, method, truncated
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise OutboundError(
                f"The TLS certificate of {url.host} could not be verified ({exc.certificate_error}); give the tool a "
                "CA bundle that signs it, or turn verify_tls off for a server you trust."
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise OutboundError(f"The TLS connection to {url.host} failed: {exc}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionFailed(f"Could not reach {masked(url, secret_params)}: {_describe(exc)}") from None
        except aiohttp.InvalidURL:
            raise OutboundError(f"{masked(url, secret_params)} is not a URL that can be requested.") from None
        except aiohttp.ClientError as exc:  # a malformed answer (oversized headers, bad framing...)
            raise OutboundError(
                f"The answer of {masked(url, secret_params)} could not be read: {_describe(exc)[:300]}"
            ) from None
    raise OutboundError(
        f"{method} {masked(url, secret_params)} was redirected more than {max_redirects} times "
        f"(the limit is {MAX_REDIRECTS_SETTING}); the API may be redirecting in a loop."
    )


def _redirect_target(current: URL, location: str, secret_params: Collection[str]) -> URL:
    try:
        target = current.join(URL(location))
    except ValueError:
        raise OutboundError(f"{masked(current, secret_params)} redirected to an invalid Location.") from None
    if target.scheme not in ("http", "https"):
        raise OutboundError(
            f"{masked(current, secret_params)} redirected to a {target.scheme or 'relative'}: URL; "
            "only http and https redirects are followed."
        )
    return target


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or str(exc.os_error) or "connection failed"
    return str(exc) or type(exc).__name__


async def fetch_document(
    url: str, *, allow_private: bool, max_bytes: int, timeout: float, max_redirects: int = 5
) -> tuple[bytes, str]:
    """The body and content type at ``url`` (an OpenAPI document, say), with the outbound rules of
    REST tools: public addresses only unless ``allow_private``, http(s) redirects checked per hop,
    at most ``max_bytes``; OutboundError with a message a person can act on otherwise."""
    target = URL(url)
    if target.scheme not in ("http", "https") or not target.host:
        raise OutboundError(f"{masked(url)} is not an http:// or https:// URL.")
    session = new_session(allow_private=allow_private, max_connections=4)
    try:
        async with asyncio.timeout(timeout):
            response = await send(
                session,
                "GET",
                target,
                headers=CIMultiDict({"Accept": "application/json, application/yaml, text/yaml, */*;q=0.5"}),
                body=None,
                ssl=True,
                max_bytes=max_bytes,
                max_redirects=max_redirects,
            )
    except TimeoutError:
        raise OutboundError(f"{masked(url)} did not answer within {timeout:g} seconds.") from None
    except ResponseTooLarge as exc:
        raise OutboundError(f"The document at {masked(url)} is larger than {exc.limit} bytes.") from None
    finally:
        await session.close()
    if not response.ok:
        raise OutboundError(f"HTTP {response.status} {response.reason} from GET {masked(response.url)}.")
    return response.body, response.content_type
