"""Failover between the gateways of a redundancy group (docs/federation.md §4): one catalog entry for a
tool they share, circuit breakers, the choice of upstream, and, end to end, two real upstream processes
behind a live gateway: one is stopped and started again while an SDK client keeps calling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.live_gateway import free_port, start_live_gateway
from tests.tools import ROOT
from transports.protocol import jsonrpc
from transports.protocol.backends import CallContext
from transports.protocol.backends.upstream_mcp import UpstreamMcpBackend
from transports.protocol.catalog import EMPTY_ROWS, build_snapshot
from transports.protocol.failover import CircuitBreakers, Failover
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.relay import UpstreamDown

SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}
# The same schema with its keys in another order: equal as JSON, so the tools are one.
SCHEMA_REORDERED = {"properties": {"message": {"type": "string"}}, "type": "object"}
OTHER_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}


def gateway_row(name: str, *, group: str = "", priority: int = 0, health: str = "unknown") -> dict[str, Any]:
    return {"name": name, "redundancy_group": group, "priority": priority, "health": health, "last_error": ""}


def tool_row(tool_id: int, name: str, gateway: str | None, upstream: str, schema: Any = SCHEMA) -> dict[str, Any]:
    return {
        "id": tool_id,
        "name": name,
        "title": "",
        "description": f"{upstream} on {gateway}",
        "input_schema": schema,
        "output_schema": None,
        "annotations": {},
        "integration_type": "mcp",
        "gateway": gateway,
        "upstream_name": upstream,
        "timeout": None,
        "backend_config": {},
    }


def server_row(name: str, *, tools: list[int] = (), gateways: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "name": name,
        "title": "",
        "tools": list(tools),
        "resources": [],
        "resource_templates": [],
        "prompts": [],
        "gateways": list(gateways),
    }


def rows(gateways: list[dict[str, Any]], tools: list[dict[str, Any]], servers: list[dict[str, Any]] = ()) -> dict:  # type: ignore[assignment]
    return {**EMPTY_ROWS, "version": 1, "gateways": gateways, "tools": tools, "servers": list(servers)}


# -- grouping in the snapshot --------------------------------------------------------------------------------


def test_a_shared_tool_is_one_entry_named_as_upstream_with_the_others_as_alternates():
    """The entry named exactly as the upstream names it serves (even when another has a better
    priority); the other providers become its alternates in priority order and leave the list."""
    snapshot = build_snapshot(
        rows(
            [
                gateway_row("a", group="pair", priority=5),
                gateway_row("b", group="pair", priority=0),
                gateway_row("c", group="pair", priority=1),
            ],
            [
                tool_row(1, "whoami", "a", "whoami"),
                tool_row(2, "b_whoami", "b", "whoami", SCHEMA_REORDERED),
                tool_row(3, "c_whoami", "c", "whoami"),
                tool_row(4, "echo", "a", "echo"),
            ],
        )
    )
    assert [t.name for t in snapshot.catalog.tools] == ["echo", "whoami"]
    whoami = snapshot.catalog.tool_by_name["whoami"]
    assert whoami.gateway == "a"
    assert whoami.alternates == (("b", "whoami"), ("c", "whoami"))
    assert snapshot.catalog.tool_by_name["echo"].alternates == ()


def test_without_an_exact_name_the_best_priority_serves():
    snapshot = build_snapshot(
        rows(
            [gateway_row("a", group="g", priority=2), gateway_row("b", group="g", priority=1)],
            [tool_row(1, "a_search", "a", "search"), tool_row(2, "b_search", "b", "search")],
        )
    )
    (entry,) = snapshot.catalog.tools
    assert (entry.name, entry.gateway, entry.alternates) == ("b_search", "b", (("a", "search"),))


def test_different_schemas_other_groups_and_ungrouped_gateways_are_not_collapsed():
    """Same upstream name but another input schema, another group, or no group: listed as before."""
    snapshot = build_snapshot(
        rows(
            [
                gateway_row("a", group="g"),
                gateway_row("b", group="g"),
                gateway_row("c", group="other"),
                gateway_row("d"),
                gateway_row("e"),
            ],
            [
                tool_row(1, "run", "a", "run"),
                tool_row(2, "b_run", "b", "run", OTHER_SCHEMA),
                tool_row(3, "c_run", "c", "run"),
                tool_row(4, "d_run", "d", "run"),
                tool_row(5, "e_run", "e", "run"),
                tool_row(6, "local", None, "local"),
            ],
        )
    )
    assert [t.name for t in snapshot.catalog.tools] == ["b_run", "c_run", "d_run", "e_run", "local", "run"]
    assert all(t.alternates == () for t in snapshot.catalog.tools)


def test_virtual_servers_listing_any_provider_or_whole_gateway_get_the_shared_entry():
    snapshot = build_snapshot(
        rows(
            [gateway_row("a", group="g"), gateway_row("b", group="g", priority=1), gateway_row("x")],
            [tool_row(1, "ping", "a", "ping"), tool_row(2, "b_ping", "b", "ping"), tool_row(3, "solo", "x", "solo")],
            [
                server_row("lists-b", tools=[2]),
                server_row("lists-both", tools=[1, 2]),
                server_row("whole-b", gateways=["b"]),
                server_row("whole-a", gateways=["a"]),
                server_row("unrelated", tools=[3]),
            ],
        )
    )
    for name in ("lists-b", "lists-both", "whole-b", "whole-a"):
        assert [t.name for t in snapshot.servers[name].tools] == ["ping"], name
        assert snapshot.servers[name].tools[0].alternates == (("b", "ping"),)
    assert [t.name for t in snapshot.servers["unrelated"].tools] == ["solo"]


# -- circuit breakers ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count():
    clock = Clock()
    breakers = CircuitBreakers(failures=3, cooldown=10, clock=clock)
    breakers.failed("a")
    breakers.failed("a")
    breakers.succeeded("a")  # not in a row any more
    breakers.failed("a")
    breakers.failed("a")
    assert breakers.state("a") == "closed"
    breakers.failed("a")
    assert breakers.state("a") == "open"
    assert not breakers.available("a")
    assert breakers.begin("a") is None
    assert breakers.state("b") == "closed"
    assert breakers.begin("b") == "go"


def test_after_the_cooldown_one_trial_call_closes_or_reopens_the_circuit():
    clock = Clock()
    breakers = CircuitBreakers(failures=1, cooldown=10, clock=clock)
    breakers.failed("a")
    clock.now += 9.9
    assert breakers.state("a") == "open"
    clock.now += 0.2
    assert breakers.state("a") == "half-open"
    assert breakers.begin("a") == "trial"
    assert breakers.begin("a") is None  # one trial at a time
    assert not breakers.available("a")
    breakers.failed("a")  # the trial failed: open again, for a whole cooldown
    assert breakers.state("a") == "open"
    clock.now += 10
    assert breakers.begin("a") == "trial"
    breakers.release("a")  # cancelled: no verdict, the next call may try
    assert breakers.begin("a") == "trial"
    breakers.succeeded("a")
    assert breakers.state("a") == "closed"
    assert breakers.snapshot() == {}


# -- the choice of candidates --------------------------------------------------------------------------------

PROVIDERS = (("a", "t"), ("b", "t"), ("c", "t"))


def upstreams(**health: str) -> dict[str, dict[str, Any]]:
    priorities = {"a": 0, "b": 0, "c": 1}
    return {
        name: gateway_row(name, group="g", priority=p, health=health.get(name, "healthy"))
        for name, p in priorities.items()
    }


def test_equal_priorities_take_turns_and_worse_ones_come_after():
    failover = Failover()
    orders = [failover.candidates("t", PROVIDERS, upstreams()) for _ in range(4)]
    assert [order[0][0] for order in orders] == ["a", "b", "a", "b"]
    assert all(order[-1] == ("c", "t") for order in orders)


def test_unreachable_and_open_candidates_are_skipped_unless_none_is_left():
    clock = Clock()
    failover = Failover(settings={"failures": 1, "cooldown": 30}, clock=clock)
    assert failover.candidates("t", PROVIDERS, upstreams(a="unreachable")) == [("b", "t"), ("c", "t")]
    failover.breakers.failed("b")
    assert failover.candidates("t", PROVIDERS, upstreams(a="unreachable")) == [("c", "t")]
    assert failover.candidates("t", PROVIDERS, upstreams(a="degraded")) == [("a", "t"), ("c", "t")]
    # Every one excluded: the best is tried anyway, so the client hears its real error.
    everything_down = upstreams(a="unreachable", b="unreachable", c="unreachable")
    assert failover.candidates("t", PROVIDERS, everything_down) == [("a", "t")]
    # A gateway missing from the snapshot (disabled since) is never a candidate.
    assert failover.candidates("t", PROVIDERS, {"c": upstreams()["c"]}) == [("c", "t")]


# -- the backend, with a scripted relay ----------------------------------------------------------------------


class ScriptedRelay:
    """Answers tools/call per gateway: an exception to raise or a result; records the order of calls."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    async def request(self, ex, gateway, method, params, *, timeout=None, shared=False, tool=None):
        self.calls.append((gateway, params["name"]))
        outcome = self.script[gateway]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def context_for(tool_name: str, snapshot) -> CallContext:
    exchange = SimpleNamespace(snapshot=snapshot)
    return CallContext(
        tool=snapshot.catalog.tool_by_name[tool_name], params={"name": tool_name}, timeout=5, exchange=exchange
    )  # type: ignore[arg-type]


def shared_snapshot():
    return build_snapshot(
        rows(
            [gateway_row("a", group="g"), gateway_row("b", group="g", priority=1)],
            [tool_row(1, "t", "a", "t"), tool_row(2, "b_t", "b", "t"), tool_row(3, "solo", "a", "solo")],
        )
    )


async def test_upstream_down_moves_on_and_an_answered_error_does_not():
    snapshot = shared_snapshot()
    down = UpstreamDown(jsonrpc.SERVER_ERROR, "Upstream 'a' is unavailable: connection refused")
    relay = ScriptedRelay({"a": down, "b": {"content": [], "served": "b"}})
    failover = Failover(settings={"failures": 2, "cooldown": 60})
    backend = UpstreamMcpBackend(relay, failover=failover)  # type: ignore[arg-type]
    assert (await backend.call({}, context_for("t", snapshot)))["served"] == "b"
    assert relay.calls == [("a", "t"), ("b", "t")]
    assert failover.breakers.snapshot() == {"a": {"state": "closed", "failures": 1}}
    await backend.call({}, context_for("t", snapshot))
    assert failover.breakers.state("a") == "open"
    relay.calls.clear()
    await backend.call({}, context_for("t", snapshot))
    assert relay.calls == [("b", "t")]  # the open circuit is passed over
    # An error the upstream answered is the client's answer: never sent to another upstream.
    relay.script["b"] = JsonRpcError(jsonrpc.INVALID_PARAMS, "bad arguments")
    relay.calls.clear()
    with pytest.raises(JsonRpcError) as raised:
        await backend.call({}, context_for("t", snapshot))
    assert not isinstance(raised.value, UpstreamDown)
    assert relay.calls == [("b", "t")]


async def test_when_every_upstream_is_down_the_error_names_them_all():
    snapshot = shared_snapshot()
    relay = ScriptedRelay(
        {name: UpstreamDown(jsonrpc.SERVER_ERROR, f"Upstream {name!r} is unavailable: refused") for name in "ab"}
    )
    backend = UpstreamMcpBackend(relay, failover=Failover())  # type: ignore[arg-type]
    with pytest.raises(UpstreamDown, match=r"Upstream 'b' is unavailable: refused \(tried every upstream .*: a, b\)"):
        await backend.call({}, context_for("t", snapshot))


async def test_a_tool_without_alternates_is_relayed_as_before_and_teaches_the_breaker():
    snapshot = shared_snapshot()
    relay = ScriptedRelay({"a": UpstreamDown(jsonrpc.SERVER_ERROR, "refused")})
    failover = Failover(settings={"failures": 1, "cooldown": 60})
    backend = UpstreamMcpBackend(relay, failover=failover)  # type: ignore[arg-type]
    with pytest.raises(UpstreamDown):
        await backend.call({}, context_for("solo", snapshot))
    assert failover.breakers.state("a") == "open"
    relay.script["a"] = {"content": []}
    await backend.call({}, context_for("solo", snapshot))  # still sent: it has nowhere else to go
    assert failover.breakers.state("a") == "closed"
    assert relay.calls == [("a", "solo"), ("a", "solo")]


async def test_a_cancelled_trial_frees_the_trial():
    snapshot = shared_snapshot()
    clock = Clock()
    failover = Failover(settings={"failures": 1, "cooldown": 1}, clock=clock)
    failover.breakers.failed("a")
    clock.now += 2
    relay = ScriptedRelay({"a": asyncio.CancelledError(), "b": {"content": []}})
    backend = UpstreamMcpBackend(relay, failover=failover)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await backend.call({}, context_for("t", snapshot))
    assert failover.breakers.begin("a") == "trial"


# -- end to end: two upstream processes, one redundancy group, a live gateway -------------------------------

COOLDOWN = 1.0
WAIT = 30.0  # bound on every wait below


class Upstream:
    """The failover fixture (``whoami`` answers with its port) on a fixed port, stopped and started again."""

    def __init__(self, port: int, log_dir) -> None:
        self.port = port
        self.log = log_dir / f"upstream-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fixtures.failover_upstream", "--port", str(self.port)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise AssertionError(f"the failover fixture did not start on {self.port}:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Kill it, as a crash would (a graceful stop waits for the gateway's open connections)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[Upstream, Upstream]]:
    upstreams = (Upstream(free_port(), tmp_path), Upstream(free_port(), tmp_path))
    try:
        for upstream in upstreams:
            upstream.start()
        yield upstreams
    finally:
        for upstream in upstreams:
            upstream.stop()


def sdk(gateway) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    return Client(streamable_http_client(gateway.mcp_url(), http_client=http), mode="legacy")


async def served_by(client: Client) -> int:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return int(result.content[0].text.removeprefix("port "))


async def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting ({WAIT:g} s): {what}")
        await asyncio.sleep(0.1)


async def test_a_redundancy_group_serves_through_an_outage_and_takes_the_upstream_back(pair, tmp_path):
    """Two upstreams in one group, equal priority: one `whoami` is listed and calls take turns; with one
    stopped every call still succeeds and its circuit opens; started again, after the cooldown its
    trial call closes the circuit and the turns include it again."""
    first, second = pair
    with start_live_gateway(
        tmp_path,
        GATEWAY_SCHEDULER="off",  # no health checks: what is seen here is the breakers' doing
        GATEWAY_CIRCUIT_FAILURES="2",
        GATEWAY_CIRCUIT_COOLDOWN=str(COOLDOWN),
    ) as gateway:
        gateway.manage("gateway_add", "one", "--url", first.url)
        gateway.manage("gateway_add", "two", "--url", second.url)
        gateway.manage(
            "shell",
            "-c",
            "from registry import events; from registry.models import Gateway; "
            "Gateway.objects.filter(name__in=['one', 'two']).update(redundancy_group='pair'); "
            "events.catalog_changed()",
        )
        async with sdk(gateway) as client:

            async def collapsed() -> bool:
                names = [t.name for t in (await client.list_tools()).tools]
                return [n for n in names if n.endswith("whoami")] == ["whoami"]

            await until(collapsed, "the catalog lists one whoami for the group")
            ports = {await served_by(client) for _ in range(4)}
            assert ports == {first.port, second.port}  # round robin among equal priorities

            second.stop()
            ports = [await served_by(client) for _ in range(6)]
            assert set(ports) == {first.port}

            async def opened() -> bool:
                return "circuit of upstream 'two' open" in gateway.log.read_text()

            await until(opened, "the gateway logs that the circuit of 'two' opened")

            second.start()

            async def back() -> bool:
                return await served_by(client) == second.port

            await until(back, "calls reach the restarted upstream again")
            assert "circuit of upstream 'two' closed" in gateway.log.read_text()
            ports = {await served_by(client) for _ in range(4)}
            assert ports == {first.port, second.port}
