"""Upstream failures as sentences a person can act on: "connection refused by 127.0.0.1:9000", "no
address for host example.invalid", "TLS certificate not trusted (self-signed certificate)", "timed out
after 10 s", never a library's repr.

The clients raise UpstreamUnavailable / UpstreamTimeout / UpstreamError with a message of their own and
(``raise ... from None``) the library's exception still reachable as ``__context__``: the chain is read
here, so the clients keep their messages and callers get one sentence. Here rather than in federation
because the relay (no Django, no federation) sends the same sentence on ``hooks.upstream_failed``;
``federation.errors.describe_failure`` is the name the rest of the gateway uses.
"""

from __future__ import annotations

import errno
import re
import socket
import ssl
from urllib.parse import urlsplit

import aiohttp

from transports.protocol.upstream.base import UpstreamError, UpstreamTimeout, UpstreamUnavailable

_CHAIN_LIMIT = 16  # links of __cause__ / __context__ followed, against a cycle
# The clients start their messages with the gateway's name ("fx: cannot connect: ..."); names are slugs.
_NAME_PREFIX = re.compile(r"^[A-Za-z0-9_-]+: ")
_WITHIN = re.compile(r"within (\d+(?:\.\d+)?) s")
_REPR = re.compile(r"\b[A-Z]\w*(Error|Exception)\(")
_CONNECTION_WORDS = {
    errno.ECONNRESET: "connection reset by",
    errno.ECONNABORTED: "connection aborted by",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable for",
    errno.EPIPE: "connection closed by",
}


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (explicit causes, else the suppressed context)."""
    links: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in links and len(links) < _CHAIN_LIMIT:
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


def _first[E: BaseException](links: list[BaseException], kind: type[E]) -> E | None:
    for link in links:
        if isinstance(link, kind):
            return link
    return None


def _innermost[E: BaseException](links: list[BaseException], kind: type[E]) -> E | None:
    """The deepest link of a kind: aiohttp's certificate error is an ssl.CertificateError too, and wraps
    the one that carries the reason."""
    return _first(links[::-1], kind)


def _address(links: list[BaseException], target: str | None) -> str:
    """HOST:PORT of the failed connection: from aiohttp's error, else from the target (a URL or host:port)."""
    connector = _first(links, aiohttp.ClientConnectorError)
    if connector is not None:
        return f"{connector.host}:{connector.port}"
    if target:
        parts = urlsplit(target if "//" in target else f"//{target}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.hostname:
            default = {"https": 443, "wss": 443}.get(parts.scheme, 80)
            return f"{parts.hostname}:{port or default}"
    return "the upstream"


def _host(links: list[BaseException], target: str | None) -> str:
    connector = _first(links, aiohttp.ClientConnectorError)
    if connector is not None:
        return str(connector.host)
    return _address(links, target).rpartition(":")[0] or "of the upstream"


def _seconds(exc: BaseException, timeout: float | None) -> str:
    if timeout is not None:
        return f"{timeout:g}"
    found = _WITHIN.search(str(exc))
    return found.group(1) if found else ""


def _tls_reason(error: ssl.SSLError) -> str:
    verify_message = getattr(error, "verify_message", None)
    if isinstance(verify_message, str) and verify_message:
        return verify_message
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    return str(error.strerror or error)


def _http(status: int) -> str:
    if status == 401:
        return "HTTP 401 from the upstream: check the gateway's credentials"
    if status == 403:
        return "HTTP 403 from the upstream: the gateway's credentials are not allowed there; check them"
    if status == 404:
        return "HTTP 404 from the upstream: check the gateway's URL"
    if status >= 500:
        return f"HTTP {status} from the upstream: the server failed"
    return f"HTTP {status} from the upstream"


def _own_words(exc: BaseException) -> str:
    """The client's message without the gateway's name, or the exception's class when it has none."""
    text = _NAME_PREFIX.sub("", str(exc).strip(), count=1)
    if not text:
        return f"the upstream failed ({type(exc).__name__})"
    found = _REPR.search(text)
    if found is not None:  # "cannot open the SSE stream: ClientConnectorError(ConnectionKey(...": cut the repr
        text = text[: found.start()].rstrip(" :") or type(exc).__name__
    return text


def describe(exc: BaseException, *, timeout: float | None = None, target: str | None = None) -> str:
    """One sentence for an upstream failure. ``timeout``: the deadline that was missed (seconds);
    ``target``: the upstream's URL or command, for failures that do not name it."""
    if isinstance(exc, UpstreamError):
        return f"the upstream answered an error: {exc.message} (code {exc.code})"
    links = _chain(exc)
    certificate = _innermost(links, ssl.SSLCertVerificationError)
    if certificate is not None:
        return f"TLS certificate not trusted ({_tls_reason(certificate)})"
    if _first(links, aiohttp.ClientConnectorDNSError) or _first(links, socket.gaierror):
        return f"no address for host {_host(links, target)}"
    if _first(links, ConnectionRefusedError):
        return f"connection refused by {_address(links, target)}"
    tls = _innermost(links, ssl.SSLError)
    if tls is not None and _first(links, aiohttp.ClientConnectorError) is not None:
        return f"TLS handshake with {_address(links, target)} failed ({_tls_reason(tls)})"
    if _first(links, UpstreamTimeout) or _first(links, TimeoutError):
        seconds = _seconds(exc, timeout)
        return f"timed out after {seconds} s" if seconds else "timed out"
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status >= 400:
        return _http(status)
    missing = _first(links, FileNotFoundError) or _first(links, PermissionError)
    if missing is not None and missing.filename is not None:
        why = "not found" if isinstance(missing, FileNotFoundError) else "permission denied"
        return f"cannot start {missing.filename}: {why}"
    if _first(links, aiohttp.ServerDisconnectedError):
        return f"the upstream at {_address(links, target)} closed the connection"
    broken = _first(links, OSError)
    if broken is not None and broken.errno in _CONNECTION_WORDS:
        return f"{_CONNECTION_WORDS[broken.errno]} {_address(links, target)}"
    if broken is not None and _first(links, aiohttp.ClientConnectorError) is not None:
        return f"cannot connect to {_address(links, target)} ({(broken.strerror or str(broken)).lower()})"
    if isinstance(exc, UpstreamUnavailable):
        return _own_words(exc)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"the connection to {_address(links, target)} failed ({_own_words(exc)})"
    return _own_words(exc)
