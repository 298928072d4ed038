"""Prometheus metrics of this process, read at scrape time (``/metrics``, gateway_project.metrics).

A custom collector on a private registry (``REGISTRY``): nothing is counted for Prometheus on the call
path; each scrape reads the recorder (``observe.recorder.metrics()``), the gauges of
``transports.stats``, the upstreams' health (the catalog's Gateway rows, read at most every
``HEALTH_CACHE_SECONDS``), the rate limiter's refusals and the serving event loop's task count. The
names, types and labels are listed in docs/governance.md ("Logs, metrics and traces").
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.choices import Health
from registry.models import Gateway
from transports import stats
from transports.protocol import limits, observe

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HEALTH_CACHE_SECONDS = 5.0

_health_lock = threading.Lock()
_serving_loop: asyncio.AbstractEventLoop | None = None
_health: tuple[float, list[tuple[str, str, int]]] = (float("-inf"), [])


def upstream_health() -> list[tuple[str, str, int]]:
    """(gateway, health, consecutive failures) of every enabled gateway; one query per
    HEALTH_CACHE_SECONDS at most (scrapes of several Prometheus servers share it)."""
    global _health
    with _health_lock:
        read_at, rows = _health
        if time.monotonic() - read_at < HEALTH_CACHE_SECONDS:
            return rows
        rows = list(
            Gateway.objects.filter(enabled=True).order_by("name").values_list("name", "health", "consecutive_failures")
        )
        _health = (time.monotonic(), rows)
        return rows


def forget_health() -> None:
    """Read the health again at the next scrape (tests)."""
    global _health
    _health = (float("-inf"), [])


def note_serving_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the event loop this process serves requests on. The /metrics view notes the loop it
    runs on: the collector itself runs in a worker thread, which has no running loop to ask."""
    global _serving_loop
    _serving_loop = loop


def asyncio_tasks() -> int | None:
    """Unfinished tasks of the serving loop; None before a scrape has noted it, or once it is closed.
    ``asyncio.all_tasks`` copes with being called from another thread (it retries its copy of the set)."""
    loop = _serving_loop
    if loop is None or loop.is_closed():
        return None
    return len(asyncio.all_tasks(loop))


def rate_limit_refusals() -> dict[str, int]:
    """Refusals per limit since the start, from the limiter."""
    return dict(limits.refusals)


def _histogram(family: HistogramMetricFamily, labels: list[str], counts: list[int], seconds: float) -> None:
    cumulative, buckets = 0, []
    for bound, count in zip((*observe.BUCKETS, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    family.add_metric(labels, buckets, seconds)


class GatewayCollector(Collector):
    """Every mcpgw_* metric of this process, built at each scrape."""

    def collect(self) -> Iterator[Metric]:
        recorded = observe.recorder.metrics()
        yield from self._requests(recorded["requests"])
        yield from self._tools(recorded["tools"])
        yield from self._gauges(stats.gauges())
        tasks = asyncio_tasks()
        if tasks is not None:
            # A number that grows without bound while the traffic does not is a task leak (make soak).
            yield GaugeMetricFamily(
                "mcpgw_asyncio_tasks", "Unfinished asyncio tasks of this process's serving event loop.", value=tasks
            )
        yield from self._health()
        refusals = CounterMetricFamily(
            "mcpgw_rate_limit_refusals",
            "Requests and calls refused by a rate or concurrency limit, by the limit (its setting's name).",
            labels=["limit"],
        )
        for limit, count in sorted(rate_limit_refusals().items()):
            refusals.add_metric([limit], count)
        yield refusals
        started = GaugeMetricFamily(
            "mcpgw_start_time_seconds", "When this process started counting (Unix time).", labels=["replica"]
        )
        started.add_metric([stats.replica_id()], recorded["started"])
        yield started

    @staticmethod
    def _requests(rows: list[list[Any]]) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "mcpgw_requests",
            "MCP requests answered by this process, by JSON-RPC method and outcome (ok, error, cancelled).",
            labels=["method", "outcome"],
        )
        latency = HistogramMetricFamily(
            "mcpgw_request_duration_seconds",
            "Time from the core's request entry to the answer, by JSON-RPC method and outcome.",
            labels=["method", "outcome"],
        )
        for method, outcome, counts, seconds in rows:
            total.add_metric([method, outcome], sum(counts))
            _histogram(latency, [method, outcome], counts, seconds)
        yield total
        yield latency

    @staticmethod
    def _tools(rows: list[list[Any]]) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "mcpgw_tool_calls",
            "tools/call by tool, gateway (empty: a local tool) and outcome (ok, error: a JSON-RPC error or isError).",
            labels=["tool", "gateway", "outcome"],
        )
        latency = HistogramMetricFamily(
            "mcpgw_tool_call_duration_seconds",
            "tools/call duration from the method table to the answer, by tool, gateway and outcome.",
            labels=["tool", "gateway", "outcome"],
        )
        for tool, gateway, outcome, counts, seconds in rows:
            total.add_metric([tool, gateway, outcome], sum(counts))
            _histogram(latency, [tool, gateway, outcome], counts, seconds)
        yield total
        yield latency

    @staticmethod
    def _gauges(found: dict[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "mcpgw_sessions",
            "Live MCP sessions held in this process's memory (0 with the shared Redis store).",
            value=found["sessions"],
        )
        if found["shared_store"] and found["shared_sessions"] is not None:
            yield GaugeMetricFamily(
                "mcpgw_shared_sessions",
                "Live MCP sessions of the whole deployment in the shared Redis store (the same on every replica).",
                value=found["shared_sessions"],
            )
        yield GaugeMetricFamily(
            "mcpgw_session_objects",
            "Session objects in this process's memory: live ones and expired ones not yet dropped (with the "
            "shared Redis store: its local cache of them).",
            value=found["session_objects"],
        )
        yield GaugeMetricFamily(
            "mcpgw_streams",
            "Open streams of this process (SSE, GET, subscriptions/listen, WebSocket).",
            value=found["streams"],
        )
        yield GaugeMetricFamily(
            "mcpgw_stdio_processes", "Running stdio upstream processes of this process.", value=found["stdio"]
        )

    @staticmethod
    def _health() -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mcpgw_upstream_health",
            "Last known health of each enabled upstream gateway: 1 for its current state, 0 for the others.",
            labels=["gateway", "state"],
        )
        failures = GaugeMetricFamily(
            "mcpgw_upstream_consecutive_failures",
            "Failed health checks in a row of each enabled upstream gateway.",
            labels=["gateway"],
        )
        for name, health, failed in upstream_health():
            for state in Health.values:
                family.add_metric([name, state], 1.0 if health == state else 0.0)
            failures.add_metric([name], failed)
        yield family
        yield failures


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(GatewayCollector())


def exposition() -> bytes:
    """The metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)
