"""Upstream failures as sentences a person can act on ("connection refused by 127.0.0.1:9000",
"TLS certificate not trusted (self-signed certificate)", "timed out after 10 s"), never a library's repr.

Used for everything federation records (Gateway.last_error, SyncRun.error) and prints. The reading of the
clients' exceptions lives beside them (``transports.protocol.upstream.failures``), because the relay sends
the same sentences on ``hooks.upstream_failed`` and may not import federation.
"""

from __future__ import annotations

from transports.protocol.upstream.failures import describe


def describe_failure(exc: BaseException, *, timeout: float | None = None, target: str | None = None) -> str:
    """One sentence for an upstream failure; ``timeout`` is the missed deadline in seconds, ``target`` the
    upstream's URL or command (named when the failure does not say where it happened)."""
    return describe(exc, timeout=timeout, target=target)
