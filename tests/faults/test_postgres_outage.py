"""PostgreSQL unreachable for 10 s under a live gateway: issue #16 item 4, fault 4.

The gateway reaches a scratch database on DATABASE_URL's PostgreSQL server through a TCP proxy of the test's own
(tests/faults/harness.TcpProxy). Cutting the proxy resets every connection and refuses new ones, as a crashed
database server or a broken network path looks to the gateway. For OUTAGE seconds:

- MCP reads (initialize, tools/list, tools/call of an upstream tool) are served from the in-memory catalog
  snapshot and the credentials the gateway already verified;
- REST writes (POST, PATCH) fail with 503 and a JSON body saying the database is unavailable, quickly;

and once the proxy forwards again, writes succeed and reach MCP clients with no restart of the gateway.
Skipped unless DATABASE_URL names PostgreSQL (CI's PostgreSQL + Redis pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.backing_services import with_database
from tests.conftest import basic
from tests.faults.harness import (
    INIT,
    McpClient,
    TcpProxy,
    gateway_env,
    http_client,
    postgres_url,
    scratch_database,
    set_up,
    tool_id,
)
from tests.fixtures.servers import start_upstream
from tests.jsonrpc import message
from tests.live_gateway import ADMIN_PASSWORD, LiveGateway, free_port
from tests.replicas.conftest import Replica
from transports.edge import DATABASE_DOWN

OUTAGE = 10.0  # seconds the database is unreachable
BOUND = 8.0  # seconds an MCP request may take during the outage (the first may wait VERIFY_TIMEOUT, 5 s)
WRITE_BOUND = 8.0  # seconds a REST write may take to fail (a new connection gives up after connect_timeout, 5 s)
SERVER_ERROR = -32000
RECOVERY = 15.0  # seconds after the outage within which writes work again


@dataclass
class Stack:
    gateway: LiveGateway
    proxy: TcpProxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("faults-postgres")
    server = postgres_url()
    target = urlsplit(server)
    with (
        scratch_database(server) as database,
        TcpProxy((target.hostname or "127.0.0.1", target.port or 5432)) as proxy,
        contextlib.ExitStack() as stack,
    ):
        fx = start_upstream("streamable-http", era="legacy")
        stack.callback(fx.stop)
        # Set up straight to the server; the gateway itself goes through the proxy.
        token = set_up(gateway_env(database), ("gateway_add", "fx", "--url", fx.url, "--era", "legacy"))
        through_proxy = with_database(server, urlsplit(database).path.strip("/"), port=proxy.port)
        gateway = Replica("gateway", free_port(), gateway_env(through_proxy), token, tmp_path / "gateway.log")
        stack.callback(gateway.stop)
        gateway.start()
        yield Stack(gateway.live, proxy)


async def rest(gateway: LiveGateway, method: str, path: str, body: object) -> tuple[int, object, float]:
    started = time.monotonic()
    status, answer = await asyncio.to_thread(gateway.api, method, path, body)
    return status, answer, time.monotonic() - started


@pytest.mark.parametrize("fault", ["refused", "blackhole"])
async def test_reads_are_served_and_writes_refused_with_503_while_postgres_is_down(stack: Stack, fault: str):
    """``refused``: every connection reset, new ones refused (a crashed server). ``blackhole``: nothing forwarded,
    nothing closed (a partition that drops packets): the first verification of a credential waits VERIFY_TIMEOUT
    (5 s) before the last verified caller stands in, and a REST write gives up after the connect_timeout (5 s)."""
    gateway = stack.gateway
    echo = tool_id(gateway, "echo")
    async with http_client() as http:
        client = McpClient(http, stack.gateway.mcp_url(), gateway.token)
        await client.initialize()
        listed = await client.request("tools/list")
        names = {tool["name"] for tool in listed.response["result"]["tools"]}
        assert "echo" in names, names
        await asyncio.sleep(1.5)  # the credential cache (1 s) has expired: the outage finds it stale

        if fault == "refused":
            stack.proxy.cut()
        else:
            stack.proxy.blackhole()
        cut_at = time.monotonic()
        rounds = 0
        try:
            while time.monotonic() - cut_at < OUTAGE:
                rounds += 1
                listed = await client.request("tools/list", timeout=BOUND)
                assert listed.error is None, listed
                assert {tool["name"] for tool in listed.response["result"]["tools"]} == names
                called = await client.call("echo", {"message": f"outage {rounds}"}, timeout=BOUND)
                assert called.text() == f"outage {rounds}", called

                fresh = McpClient(http, stack.gateway.mcp_url(), gateway.token)
                await fresh.initialize(timeout=BOUND)

                # Credentials never verified before cannot be checked now: 503 with a JSON-RPC error, not a 500.
                stranger = McpClient(http, stack.gateway.mcp_url(), "")
                refused = await stranger.post(
                    message("initialize", INIT, 1),
                    timeout=BOUND,
                    headers={"Authorization": basic("admin", ADMIN_PASSWORD)},
                )
                assert refused.status == 503, refused
                assert refused.error == {"code": SERVER_ERROR, "message": DATABASE_DOWN}, refused

                for method, path, body in (
                    ("POST", "/api/tools", {"name": f"during_{rounds}", "gateway": "fx"}),
                    ("PATCH", f"/api/tools/{echo}", {"description": "during the outage"}),
                ):
                    status, answer, took = await rest(gateway, method, path, body)
                    assert status == 503, (method, status, answer)
                    assert isinstance(answer, dict), answer
                    assert "database cannot be reached" in answer["detail"], answer
                    assert took < WRITE_BOUND, f"{method} took {took:.1f} s"
                await asyncio.sleep(0.5)
        finally:
            stack.proxy.restore()
        assert rounds >= 1

        deadline = time.monotonic() + RECOVERY
        while True:
            status, body = await asyncio.to_thread(
                gateway.api, "POST", "/api/tools", {"name": f"after_{fault}", "gateway": "fx"}
            )
            if status == 201 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert status == 201, (status, body)
        deadline = time.monotonic() + RECOVERY
        while True:
            listed = await client.request("tools/list")
            if f"after_{fault}" in {tool["name"] for tool in listed.response["result"]["tools"]}:
                break
            assert time.monotonic() < deadline, "the tool created after the outage never reached tools/list"
            await asyncio.sleep(0.2)
        called = await client.call("echo", {"message": "recovered"})
        assert called.text() == "recovered", called
