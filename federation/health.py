"""Health checks of upstream gateways and the passive signals of failed calls (docs/federation.md).

A check connects a client of its own (never the serving pool's: a check must see what a new connection
sees, and must not disturb the sessions clients use), pings, closes, and records the outcome in the
registry's state machine (``registry.gateway_state``). Failed calls relayed to clients count too: the
relay sends ``hooks.upstream_failed`` and ``after_call_failure`` marks a healthy gateway degraded at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import OperationalError

from federation.errors import describe_failure
from federation.services import _row, own_client
from registry.gateway_state import gateway_check_record, gateway_passive_failure
from registry.models import Gateway
from transports.protocol.upstream.base import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from transports.protocol.vocabulary import PING

logger = logging.getLogger(__name__)

# What a probe may raise for an upstream's failure (the rest are bugs, and propagate): the clients' own
# errors, a configuration create_client refuses, and what a library lets through in an edge case.
_FAILURES = (UpstreamError, UpstreamTimeout, UpstreamUnavailable, ValueError, OSError, aiohttp.ClientError)


@dataclass(frozen=True)
class CheckResult:
    """One health check: the gateway's name, whether the upstream answered, its state before and after,
    the failure as a sentence ("" when ok) and how long the probe took."""

    gateway: str
    ok: bool
    before: str
    after: str
    error: str = ""
    latency_ms: int = 0

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def _probe(row: dict[str, Any], timeout: float) -> None:
    client = await own_client(row, timeout, connect_timeout=timeout)
    try:
        await client.connect()
        # A 2026-07-28 session turns ping (removed in that era) into an uncached server/discover, which is
        # the contract's probe for it; a session-era upstream answers ping itself.
        await client.request(PING, {}, timeout=timeout)
    finally:
        await client.aclose()


def gateway_check(*, gateway: Gateway, timeout: float | None = None) -> CheckResult:
    """Probe the upstream once (connect, ping or server/discover, close) and record the result in the
    health state machine; an upstream's failure is recorded, never raised."""
    seconds = float(settings.GATEWAY_HEALTH_TIMEOUT if timeout is None else timeout)
    row = _row(gateway)
    started = time.monotonic()
    error = ""
    try:
        async_to_sync(_probe)(row, seconds)
    except _FAILURES as exc:
        # An upstream that wants each user's own credentials refuses the gateway's probe with 401/403: it
        # answered, which is what health means here (the users' calls carry their credentials).
        if not (gateway.per_user_credentials and _http_status(exc) in (401, 403)):
            error = describe_failure(exc, timeout=seconds, target=gateway.url or gateway.command)
    latency_ms = round((time.monotonic() - started) * 1000)
    before, after = gateway_check_record(gateway_id=gateway.pk, ok=not error, error=error)
    if before != after:
        log = logger.info if after == "healthy" else logger.warning
        log("gateway %s: %s -> %s%s", gateway.name, before, after, f" ({error})" if error else "")
    return CheckResult(gateway.name, not error, before, after, error, latency_ms)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an upstream refused with, anywhere in the exception's chain."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        status = getattr(seen, "status", None)
        if isinstance(status, int):
            return status
        seen = seen.__cause__ or seen.__context__
    return None


LOCKED_RETRIES = 5


async def after_call_failure(gateway_name: str, error: str) -> None:
    """hooks.upstream_failed receiver: a call failed on the connection, so a healthy (or not yet checked)
    gateway is marked degraded at once; its health checks decide what comes next."""

    def mark() -> bool:
        from django.db import connection

        try:
            return gateway_passive_failure(name=gateway_name, error=error)
        finally:
            connection.close()  # a worker thread of its own: its connection would otherwise linger

    marked = False
    for attempt in range(LOCKED_RETRIES):
        try:
            marked = await sync_to_async(mark, thread_sensitive=False)()
            break
        except OperationalError:
            # SQLite (the embedded default) refuses a write while another connection holds the table, at
            # once for its in-memory test database: try again shortly rather than lose the signal.
            if attempt == LOCKED_RETRIES - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    if marked:
        logger.warning("gateway %s: degraded after a failed call (%s)", gateway_name, error)
