"""The gateway's traffic across its replicas: what the dashboard shows (and what scrapers can read).

Each serving process counts its own tools/calls in ``transports.protocol.observe`` (no query, no
network on the call path). Here, off the call path:

- ``local_snapshot()``: this process's counts plus its gauges: the sessions it holds (the in-memory
  store), or all the deployment's live sessions (the shared Redis store: one ZCOUNT), its open streams
  (``edge.streams``: SSE, GET, subscriptions/listen, WebSocket) and its running stdio processes;
- ``publish()``: that snapshot into the Django cache under a key of this replica, expiring after
  ``TTL_PERIODS`` publishing periods, and the replica into an index of live replicas. A daemon thread
  (``start_publishing``, from ``gateway_project.asgi`` like the in-process scheduler) does it every
  GATEWAY_STATS_PUBLISH_SECONDS; 0 starts no thread;
- ``collect()``: the sum of every live replica's last snapshot and this process's live counts, as the
  rows of the dashboard's tables.

With the embedded default (one process, LocMemCache) ``collect()`` sees this process alone, live. No
database is used. A replica that restarted lost its counts (they are in process); a replica that died
drops out after its key expires.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache

from transports import edge, runtime
from transports.protocol import observe
from transports.protocol.sessions import SessionStore
from transports.protocol.shared_sessions import RedisSessionStore
from transports.protocol.stdio_supervisor import RUNNING

logger = logging.getLogger(__name__)

INDEX_KEY = "gateway-stats:replicas"
TTL_PERIODS = 3  # a replica's snapshot outlives this many missed publications
RECENT_MINUTES = 5
HOUR_MINUTES = observe.MINUTES

_replica: tuple[int, str] | None = None  # (pid, id): a forked child makes its own
_publisher: Publisher | None = None
_publisher_pid: int | None = None
_lock = threading.Lock()
_redis_clients: dict[str, Any] = {}


def replica_id() -> str:
    """This process among the replicas: host, process id and a random suffix (a reused pid differs)."""
    global _replica
    pid = os.getpid()
    if _replica is None or _replica[0] != pid:
        _replica = (pid, f"{socket.gethostname()[:40]}:{pid}:{secrets.token_hex(2)}")
    return _replica[1]


def replica_key(replica: str) -> str:
    return f"gateway-stats:replica:{replica}"


# -- this process --------------------------------------------------------------------------------


def _live_local_sessions(store: SessionStore) -> int:
    """Sessions of the in-memory store that have not expired (expired ones linger until the next create)."""
    now = time.monotonic()
    return sum(1 for s in store.known() if s.listeners or now - s.last_seen <= store.idle_timeout)


def _shared_sessions(store: RedisSessionStore) -> int | None:
    """Live sessions of the whole deployment: the shared store's index scores each by its expiry."""
    try:
        client = _redis_clients.get(store.url)
        if client is None:
            import redis

            client = _redis_clients[store.url] = redis.Redis.from_url(
                store.url, socket_timeout=2, socket_connect_timeout=2
            )
        return int(client.zcount(f"{store.prefix}all", time.time(), "+inf"))
    except Exception:
        logger.warning("cannot count the shared sessions in Redis", exc_info=True)
        return None


def _stdio_running(core: Any) -> int:
    # states() walks the supervisor's units, which the event loop may change meanwhile: try again.
    for _ in range(3):
        try:
            return sum(1 for state in core.upstreams.stdio.states() if state["state"] == RUNNING)
        except RuntimeError:
            continue
    return 0


def gauges() -> dict[str, Any]:
    """What is open in this process now: ``sessions`` (held here; 0 with the shared store),
    ``shared_store`` (sessions live in Redis), ``shared_sessions`` (then: the whole deployment's live
    sessions, None when Redis could not be read), ``session_objects`` (session objects in this
    process's memory, expired ones not yet dropped included), ``streams``, ``stdio`` (running processes)."""
    core = runtime.current_core()  # this process's core, if it serves MCP yet (no core is made for a reading)
    sessions, shared_store, shared, stdio, objects = 0, False, None, 0, 0
    if core is not None:
        store = core.sessions
        objects = len(store)
        if isinstance(store, RedisSessionStore):
            shared_store, shared = True, _shared_sessions(store)
        else:
            sessions = _live_local_sessions(store)
        stdio = _stdio_running(core)
    return {
        "sessions": sessions,
        "shared_store": shared_store,
        "shared_sessions": shared,
        "session_objects": objects,
        "streams": edge.streams.total,
        "stdio": stdio,
    }


def local_snapshot() -> dict[str, Any]:
    """``observe.recorder.snapshot()`` with this replica's id and ``gauges()``."""
    snapshot = observe.recorder.snapshot()
    snapshot["replica"] = replica_id()
    snapshot["gauges"] = gauges()
    return snapshot


# -- publishing ----------------------------------------------------------------------------------


def publish(*, period: float | None = None) -> None:
    """Put this replica's snapshot in the cache and the replica in the index of live replicas."""
    period = float(settings.GATEWAY_STATS_PUBLISH_SECONDS if period is None else period)
    ttl = max(TTL_PERIODS * period, 1.0)
    snapshot = local_snapshot()
    replica, now = snapshot["replica"], snapshot["at"]
    cache.set(replica_key(replica), snapshot, timeout=ttl)
    # Read, add, write: two replicas writing at once may drop the other's newest entry; it is back on
    # that replica's next publication, and an older entry of it stays within ``ttl`` meanwhile.
    index = cache.get(INDEX_KEY) or {}
    index = {name: seen for name, seen in index.items() if seen > now - ttl and name != replica}
    index[replica] = now
    cache.set(INDEX_KEY, index, timeout=ttl * 4)


def withdraw() -> None:
    """Take this replica out of the cache (it stops)."""
    replica = replica_id()
    cache.delete(replica_key(replica))
    index = cache.get(INDEX_KEY) or {}
    if replica in index:
        del index[replica]
        cache.set(INDEX_KEY, index, timeout=max(TTL_PERIODS * float(settings.GATEWAY_STATS_PUBLISH_SECONDS), 1) * 4)


class Publisher(threading.Thread):
    """Publishes this replica's snapshot every ``period`` seconds until stopped."""

    def __init__(self, period: float) -> None:
        super().__init__(name="gateway-stats-publisher", daemon=True)
        self.period = period
        self._stopped = threading.Event()

    def run(self) -> None:
        failing = False
        while True:
            try:
                publish(period=self.period)
                failing = False
            except Exception:  # the cache is unreachable: try again next period (logged once per outage)
                logger.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "publishing this replica's traffic statistics failed",
                    exc_info=True,
                )
                failing = True
            if self._stopped.wait(self.period):
                break
        try:
            withdraw()
        except Exception:
            logger.info("could not withdraw this replica's traffic statistics", exc_info=True)

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        self.join(timeout)


def start_publishing() -> Publisher | None:
    """Start this process's publisher once (none when GATEWAY_STATS_PUBLISH_SECONDS is 0)."""
    global _publisher, _publisher_pid
    period = float(settings.GATEWAY_STATS_PUBLISH_SECONDS)
    if period <= 0:
        return None
    with _lock:
        # After a fork the child has the parent's object but not its thread.
        if _publisher is None or _publisher_pid != os.getpid():
            _publisher, _publisher_pid = Publisher(period), os.getpid()
            _publisher.start()
            atexit.register(_publisher.stop, 2.0)
        return _publisher


def stop_publishing() -> None:
    """Stop this process's publisher (tests, shutdown)."""
    global _publisher, _publisher_pid
    with _lock:
        publisher, _publisher, _publisher_pid = _publisher, None, None
    if publisher is not None:
        publisher.stop(5.0)


# -- the view across replicas --------------------------------------------------------------------


@dataclass
class Usage:
    """Calls, errors and their total duration in one window."""

    calls: int = 0
    errors: int = 0
    ms: float = 0.0

    def add(self, calls: int, errors: int, ms: float) -> None:
        self.calls += calls
        self.errors += errors
        self.ms += ms

    @property
    def error_rate(self) -> float | None:
        """Errors per call (0..1), None without calls."""
        return self.errors / self.calls if self.calls else None

    @property
    def mean_ms(self) -> float | None:
        return self.ms / self.calls if self.calls else None


@dataclass
class Row:
    """One tool (of one gateway), or one gateway (``tool`` None): its last 5 minutes and last hour.
    ``tool`` is observe.UNKNOWN_TOOL for calls naming no tool; ``gateway`` observe.LOCAL for local tools."""

    tool: str | None
    gateway: str
    recent: Usage = field(default_factory=Usage)
    hour: Usage = field(default_factory=Usage)
    recent_minutes: float = RECENT_MINUTES
    hour_minutes: float = HOUR_MINUTES

    @property
    def per_minute_recent(self) -> float:
        return self.recent.calls / self.recent_minutes

    @property
    def per_minute_hour(self) -> float:
        return self.hour.calls / self.hour_minutes

    @property
    def failing(self) -> bool:
        """Some call failed in the last 5 minutes."""
        return self.recent.errors > 0

    def sort_key(self) -> tuple[Any, ...]:
        """Failing first (worst recent error rate first), then by errors and calls in the hour."""
        return (
            not self.failing,
            -(self.recent.error_rate or 0.0),
            -(self.hour.error_rate or 0.0),
            -self.hour.calls,
            self.tool or "",
            self.gateway,
        )


@dataclass
class Traffic:
    """Every live replica's traffic summed: the gauges now, and per tool and per gateway the last 5
    minutes and the last hour (or since the oldest replica started, when that is less)."""

    at: float  # wall-clock seconds
    started: float  # when the oldest live replica started counting
    replicas: int
    sessions: int | None  # None: the shared store could not be read
    streams: int
    stdio: int
    tools: list[Row]
    gateways: list[Row]
    complete: bool = True  # False: the cache could not be read, only this process is counted

    @property
    def covered_seconds(self) -> float:
        """How much of the last hour the counts cover."""
        return min(self.at - self.started, HOUR_MINUTES * 60.0)

    @property
    def full_hour(self) -> bool:
        return self.at - self.started >= HOUR_MINUTES * 60.0

    @property
    def calls(self) -> int:
        return sum(row.hour.calls for row in self.tools)


def _window_minutes(now: float, started: float, minutes: int) -> float:
    """The minutes a window of ``minutes`` whole-minute buckets up to now covers, counting from the
    start when that is later (at least one, so the first seconds do not inflate the rate)."""
    begin = max((int(now // 60) - minutes + 1) * 60.0, started)
    return max(now - begin, 60.0) / 60.0


def merge(snapshots: list[dict[str, Any]], *, now: float | None = None, complete: bool = True) -> Traffic:
    """Sum the snapshots (``observe.Recorder.snapshot`` with ``gauges``) of several replicas."""
    now = time.time() if now is None else now
    minute = int(now // 60)
    started = min((s["started"] for s in snapshots), default=now)
    recent_minutes = _window_minutes(now, started, RECENT_MINUTES)
    hour_minutes = _window_minutes(now, started, HOUR_MINUTES)
    tools: dict[tuple[str, str], Row] = {}
    gateways: dict[str, Row] = {}
    sessions, streams, stdio = 0, 0, 0
    shared: tuple[float, int] | None = None  # (when read, count): the freshest reading wins
    shared_store = False
    for snapshot in snapshots:
        found = snapshot.get("gauges") or {}
        sessions += found.get("sessions") or 0
        streams += found.get("streams") or 0
        stdio += found.get("stdio") or 0
        shared_store = shared_store or bool(found.get("shared_store"))
        if found.get("shared_sessions") is not None and (shared is None or snapshot["at"] > shared[0]):
            shared = (snapshot["at"], int(found["shared_sessions"]))
        for tool, gateway, buckets, _totals in snapshot["series"]:
            row = tools.get((tool, gateway))
            if row is None:
                row = tools[(tool, gateway)] = Row(
                    tool, gateway, recent_minutes=recent_minutes, hour_minutes=hour_minutes
                )
            by_gateway = None
            if tool not in (observe.UNKNOWN_TOOL, observe.OTHER):
                by_gateway = gateways.get(gateway)
                if by_gateway is None:
                    by_gateway = gateways[gateway] = Row(
                        None, gateway, recent_minutes=recent_minutes, hour_minutes=hour_minutes
                    )
            for bucket_minute, calls, errors, ms in buckets:
                age = minute - bucket_minute
                if age >= HOUR_MINUTES or age < -1:  # too old, or from a clock well ahead of ours
                    continue
                row.hour.add(calls, errors, ms)
                if by_gateway is not None:
                    by_gateway.hour.add(calls, errors, ms)
                if age < RECENT_MINUTES:
                    row.recent.add(calls, errors, ms)
                    if by_gateway is not None:
                        by_gateway.recent.add(calls, errors, ms)
    tool_rows = sorted((row for row in tools.values() if row.hour.calls), key=Row.sort_key)
    gateway_rows = sorted((row for row in gateways.values() if row.hour.calls), key=Row.sort_key)
    total_sessions: int | None = sessions
    if shared is not None:
        total_sessions = sessions + shared[1]
    elif shared_store:  # nobody could read the shared store lately
        total_sessions = None
    return Traffic(
        at=now,
        started=started,
        replicas=len(snapshots),
        sessions=total_sessions,
        streams=streams,
        stdio=stdio,
        tools=tool_rows,
        gateways=gateway_rows,
        complete=complete,
    )


def collect() -> Traffic:
    """Every live replica's last published snapshot, with this process's own counts taken now."""
    own = local_snapshot()
    snapshots = [own]
    complete = True
    try:
        index = cache.get(INDEX_KEY) or {}
        keys = [replica_key(name) for name in index if name != own["replica"]]
        if keys:
            snapshots += [s for s in cache.get_many(keys).values() if isinstance(s, dict) and "series" in s]
    except Exception:
        logger.warning("cannot read the other replicas' traffic statistics from the cache", exc_info=True)
        complete = False
    return merge(snapshots, now=own["at"], complete=complete)
