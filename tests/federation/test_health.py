"""Health checks against real upstreams (federation.health.gateway_check) and the sentences failures
become (federation.errors.describe_failure), each from a real situation: a closed port, an unresolvable
host, an untrusted certificate, a server that never answers, HTTP 401/403, a process that exits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Iterator

import pytest

from federation.errors import describe_failure
from federation.health import CheckResult, after_call_failure, gateway_check
from registry.choices import Health, Transport
from tests.factories import GatewayFactory
from tests.fixtures.http_api import https_api  # noqa: F401
from tests.fixtures.servers import free_port, start_upstream, upstream_command
from transports.protocol.upstream import create_client
from transports.protocol.upstream.base import UpstreamConfig, UpstreamError

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _health_settings(settings):
    settings.GATEWAY_HEALTH_FAILURES = 3
    settings.GATEWAY_HEALTH_TIMEOUT = 5.0


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


# ---- the state machine driven by a real upstream ------------------------------------------------------------


def test_an_upstream_that_stops_becomes_degraded_then_unreachable_and_healthy_again_when_back():
    upstream = start_upstream("streamable-http")
    try:
        gateway = GatewayFactory(url=upstream.url)
        first = gateway_check(gateway=gateway)
        assert isinstance(first, CheckResult)
        assert (first.gateway, first.ok, first.before, first.after, first.error) == (
            gateway.name,
            True,
            "unknown",
            "healthy",
            "",
        )
        assert first.latency_ms >= 0

        upstream.stop()
        refused = f"connection refused by 127.0.0.1:{upstream.port}"
        states = [gateway_check(gateway=gateway) for _ in range(3)]
        assert [(r.ok, r.before, r.after) for r in states] == [
            (False, "healthy", "degraded"),
            (False, "degraded", "degraded"),
            (False, "degraded", "unreachable"),
        ]
        assert {r.error for r in states} == {refused}
        gateway.refresh_from_db()
        assert (gateway.health, gateway.consecutive_failures, gateway.last_error) == (Health.UNREACHABLE, 3, refused)
        assert gateway.next_check_at is not None

        upstream = start_upstream("streamable-http", port=upstream.port)
        back = gateway_check(gateway=gateway)
        assert (back.ok, back.before, back.after) == (True, "unreachable", "healthy")
        gateway.refresh_from_db()
        assert (gateway.health, gateway.consecutive_failures, gateway.last_error) == (Health.HEALTHY, 0, "")
        assert gateway.next_check_at is None
        assert gateway.last_seen_at is not None
    finally:
        upstream.stop()


@pytest.mark.parametrize("era", ["modern", "legacy"])
def test_a_check_speaks_the_upstreams_era(era):
    """server/discover for a 2026-07-28 upstream, ping for a session-era one."""
    upstream = start_upstream("streamable-http", era=era)
    try:
        gateway = GatewayFactory(url=upstream.url, era=era)
        assert gateway_check(gateway=gateway).after == "healthy"
    finally:
        upstream.stop()


def test_a_stdio_upstream_is_checked_by_starting_it():
    argv = upstream_command("stdio")
    gateway = GatewayFactory(transport=Transport.STDIO, url="", command=argv[0], args=argv[1:])
    result = gateway_check(gateway=gateway)
    assert (result.ok, result.after, result.error) == (True, "healthy", "")


# ---- each failure as a sentence ----------------------------------------------------------------------------------


def check_error(**gateway_fields) -> str:
    """Check a gateway made of ``gateway_fields``; the sentence recorded as its last error."""
    gateway = GatewayFactory(**gateway_fields)
    result = gateway_check(gateway=gateway, timeout=5.0)
    gateway.refresh_from_db()
    assert not result.ok
    assert gateway.last_error == result.error
    assert gateway.health == Health.DEGRADED
    return result.error


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_a_closed_port(transport):
    port = free_port()
    assert check_error(transport=transport, url=f"http://127.0.0.1:{port}/mcp") == (
        f"connection refused by 127.0.0.1:{port}"
    )


def test_a_closed_port_over_websocket():
    port = free_port()
    assert check_error(transport=Transport.WEBSOCKET, url=f"ws://127.0.0.1:{port}/ws") == (
        f"connection refused by 127.0.0.1:{port}"
    )


def test_a_host_that_does_not_resolve():
    assert check_error(url="http://gateway-health-test.invalid/mcp") == (
        "no address for host gateway-health-test.invalid"
    )


def test_a_certificate_nobody_trusts(https_api):  # noqa: F811
    error = check_error(url=https_api.https_url("/echo/mcp"))
    assert error == "TLS certificate not trusted (unable to get local issuer certificate)"


def test_the_certificate_is_trusted_with_the_ca_bundle(https_api):  # noqa: F811
    """With the CA that signed it the TLS handshake succeeds: what fails next is not TLS."""
    error = check_error(url=https_api.https_url("/status/404"), ca_bundle=https_api.ca_pem)
    assert error == "HTTP 404 from the upstream: check the gateway's URL"


def test_a_server_that_never_answers():
    with silent_server() as port:
        gateway = GatewayFactory(url=f"http://127.0.0.1:{port}/mcp")
        result = gateway_check(gateway=gateway, timeout=1.0)
    assert result.error == "timed out after 1 s"


@pytest.mark.parametrize(
    ("status", "sentence"),
    [
        (401, "HTTP 401 from the upstream: check the gateway's credentials"),
        (403, "HTTP 403 from the upstream: the gateway's credentials are not allowed there; check them"),
        (502, "HTTP 502 from the upstream: the server failed"),
    ],
)
def test_http_errors(https_api, status, sentence):  # noqa: F811
    assert check_error(url=https_api.url(f"/status/{status}")) == sentence


def test_a_process_that_exits():
    script = "import sys; sys.stderr.write('config file missing\\n'); sys.exit(1)"
    error = check_error(transport=Transport.STDIO, url="", command=sys.executable, args=["-c", script])
    assert error == "the process exited with code 1; last stderr: config file missing"


def test_a_command_that_does_not_exist():
    error = check_error(transport=Transport.STDIO, url="", command="/nonexistent/mcp-server")
    assert error == "cannot start /nonexistent/mcp-server: not found"


def test_an_error_the_upstream_answered():
    upstream = start_upstream("streamable-http", era="legacy")

    async def ask() -> BaseException:
        client = create_client(UpstreamConfig(name="fx", transport="streamable-http", url=upstream.url))
        try:
            await client.connect()
            await client.request("no/such-method", {})
        except UpstreamError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("the upstream answered an unknown method")

    try:
        error = asyncio.run(ask())
    finally:
        upstream.stop()
    assert describe_failure(error) == "the upstream answered an error: Method not found (code -32601)"


def test_a_timeout_names_the_deadline_it_missed():
    from transports.protocol.upstream.base import UpstreamTimeout

    assert describe_failure(UpstreamTimeout("fx: tools/call got no answer within 30 s")) == "timed out after 30 s"
    assert describe_failure(UpstreamTimeout("fx: slow"), timeout=2.5) == "timed out after 2.5 s"


# ---- the passive signal -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_call_degrades_a_healthy_gateway():
    gateway = GatewayFactory(health=Health.HEALTHY)
    asyncio.run(after_call_failure(gateway.name, "connection refused by 127.0.0.1:9"))
    gateway.refresh_from_db()
    assert (gateway.health, gateway.last_error) == (Health.DEGRADED, "connection refused by 127.0.0.1:9")


@pytest.mark.django_db(transaction=True)
def test_a_locked_sqlite_table_delays_the_signal_but_does_not_lose_it(monkeypatch):
    """SQLite refuses a write while another connection holds the table (at once, in the test database): the
    receiver tries again shortly and the gateway is still marked degraded."""
    from django.db import OperationalError

    from federation import health

    gateway = GatewayFactory(health=Health.HEALTHY)
    real, refusals = health.gateway_passive_failure, [2]

    def locked_twice(**kwargs):
        if refusals[0]:
            refusals[0] -= 1
            raise OperationalError("database table is locked: registry_gateway")
        return real(**kwargs)

    monkeypatch.setattr(health, "gateway_passive_failure", locked_twice)
    asyncio.run(after_call_failure(gateway.name, "connection refused by 127.0.0.1:9"))
    gateway.refresh_from_db()
    assert refusals == [0]
    assert gateway.health == Health.DEGRADED
