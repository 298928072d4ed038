"""Upstream failures as sentences a person can act on ("connection refused by 127.0.0.1:9000",
"TLS certificate not trusted", "timed out after 10 s"), never a library's repr.

Used for everything federation records (Gateway.last_error, SyncRun.error) and prints.
"""

from __future__ import annotations


def describe_failure(exc: BaseException, *, timeout: float | None = None) -> str:
    """One sentence for an upstream failure (stub: refined by the health work)."""
    from transports.protocol.upstream.base import UpstreamError, UpstreamTimeout

    if isinstance(exc, (UpstreamTimeout, TimeoutError)):
        return f"timed out after {timeout or 0:g} s"
    if isinstance(exc, UpstreamError):
        return f"the upstream answered an error: {exc.message} (code {exc.code})"
    return str(exc) or type(exc).__name__
