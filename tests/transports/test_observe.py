"""Traffic counting: the in-process recorder (``transports.protocol.observe``), the sum across replicas
(``transports.stats``), and real tools/calls through the gateway, in both eras, showing up in it."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import override_settings

from registry import auth
from tests.factories import GatewayFactory, ToolFactory, UserFactory
from tests.transports.test_hot_path import INITIALIZE, EchoUpstream, _close_connection, asgi_post, modern_request
from transports import edge, stats
from transports.protocol import observe
from transports.runtime import get_core, reset_core


class FakeClock:
    """Monotonic seconds the test moves by hand; with epoch 0 they are wall-clock seconds too."""

    def __init__(self, now: float = 1_000 * 60.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def recorder_at(clock: FakeClock) -> observe.Recorder:
    return observe.Recorder(clock=clock, epoch=0.0)


def buckets(recorder: observe.Recorder, tool: str, gateway: str = "gw") -> list[list]:
    return next(s[2] for s in recorder.snapshot()["series"] if s[0] == tool and s[1] == gateway)


# -- the recorder ---------------------------------------------------------------------------------


def test_a_call_lands_in_the_bucket_of_its_minute_with_its_duration_and_error():
    clock = FakeClock()
    recorder = recorder_at(clock)
    started = clock.now
    clock.now += 0.25
    recorder.record("echo", "gw", False, started)
    recorder.record("echo", "gw", True, clock.now - 0.75)
    assert buckets(recorder, "echo") == [[1000, 2, 1, 1000.0]]
    snapshot = recorder.snapshot()
    assert snapshot["minute"] == 1000
    assert snapshot["series"][0][3] == [2, 1, 1000.0]  # totals since the start


def test_buckets_roll_and_an_hour_old_bucket_is_reused_from_zero():
    """A bucket older than an hour leaves the snapshot; the slot it held starts again at zero."""
    clock = FakeClock()
    recorder = recorder_at(clock)
    recorder.record("echo", "gw", True, clock.now)
    clock.now += 60
    recorder.record("echo", "gw", False, clock.now)
    assert [b[:3] for b in buckets(recorder, "echo")] == [[1000, 1, 1], [1001, 1, 0]]
    clock.now += 59 * 60  # minute 1060: minute 1000 is an hour old
    assert [b[:3] for b in buckets(recorder, "echo")] == [[1001, 1, 0]]
    recorder.record("echo", "gw", False, clock.now)  # the slot of minute 1000, reused
    assert [b[:3] for b in buckets(recorder, "echo")] == [[1001, 1, 0], [1060, 1, 0]]
    assert recorder.snapshot()["series"][0][3][:2] == [3, 1]  # totals keep counting


def test_series_beyond_the_maximum_are_counted_together(monkeypatch):
    monkeypatch.setattr(observe, "MAX_SERIES", 2)
    clock = FakeClock()
    recorder = recorder_at(clock)
    for name in ("a", "b", "c", "d"):
        recorder.record(name, "", False, clock.now)
    names = sorted(s[0] for s in recorder.snapshot()["series"])
    assert names == sorted([observe.OTHER, "a", "b"])
    assert buckets(recorder, observe.OTHER, "")[0][1] == 2


# -- the sum across replicas ----------------------------------------------------------------------


def snapshot_of(recorder: observe.Recorder, replica: str, **gauges) -> dict:
    return recorder.snapshot() | {"replica": replica, "gauges": {"sessions": 0, "streams": 0, "stdio": 0, **gauges}}


def test_merge_sums_replicas_per_tool_and_gateway_over_5_minutes_and_the_hour():
    """Calls 30 minutes ago count in the hour only; the gateway's row sums its tools; rates are per minute
    of the window; failing rows (an error in the last 5 minutes) sort first."""
    clock = FakeClock(2_000 * 60.0)
    one, two = recorder_at(clock), recorder_at(clock)
    one.started = two.started = clock.now - 2 * 3600  # both have run for hours
    clock.now -= 30 * 60
    for _ in range(30):
        one.record("slow", "gw", False, clock.now - 0.1)
    clock.now += 30 * 60
    for _ in range(5):
        two.record("slow", "gw", False, clock.now - 0.1)
    two.record("flaky", "gw", True, clock.now)
    one.record("flaky", "gw", False, clock.now)
    one.record("local_tool", observe.LOCAL, False, clock.now)
    traffic = stats.merge(
        [snapshot_of(one, "r1", sessions=2, streams=1), snapshot_of(two, "r2", sessions=1, stdio=1)],
        now=clock.now + 30,
    )
    assert (traffic.replicas, traffic.sessions, traffic.streams, traffic.stdio) == (2, 3, 1, 1)
    assert traffic.full_hour
    rows = {(row.tool, row.gateway): row for row in traffic.tools}
    slow = rows[("slow", "gw")]
    assert (slow.recent.calls, slow.hour.calls, slow.hour.errors) == (5, 35, 0)
    assert slow.hour.mean_ms == pytest.approx(100.0)
    assert slow.per_minute_hour == pytest.approx(35 / 59.5)  # 59 whole minutes and the 30 s of this one
    assert slow.per_minute_recent == pytest.approx(5 / 4.5)
    flaky = rows[("flaky", "gw")]
    assert flaky.failing
    assert flaky.recent.error_rate == 0.5
    assert traffic.tools[0] is flaky  # failing first
    gateways = {row.gateway: row for row in traffic.gateways}
    assert gateways["gw"].hour.calls == 37
    assert gateways["gw"].recent.errors == 1
    assert gateways[observe.LOCAL].hour.calls == 1
    assert traffic.gateways[0].gateway == "gw"


def test_the_window_starts_when_the_gateway_started_if_that_is_less_than_an_hour():
    clock = FakeClock()
    recorder = recorder_at(clock)
    clock.now += 12 * 60
    for _ in range(24):
        recorder.record("echo", "gw", False, clock.now)
    traffic = stats.merge([snapshot_of(recorder, "r1")], now=clock.now)
    assert not traffic.full_hour
    assert traffic.covered_seconds == 12 * 60
    assert traffic.tools[0].per_minute_hour == pytest.approx(2.0)  # 24 calls in 12 minutes


def test_unknown_tools_are_listed_but_belong_to_no_gateway():
    clock = FakeClock()
    recorder = recorder_at(clock)
    recorder.record(observe.UNKNOWN_TOOL, observe.LOCAL, True, clock.now)
    traffic = stats.merge([snapshot_of(recorder, "r1")], now=clock.now)
    assert [(row.tool, row.hour.errors) for row in traffic.tools] == [(observe.UNKNOWN_TOOL, 1)]
    assert traffic.gateways == []


def test_the_shared_session_count_is_taken_once_from_the_freshest_reading():
    clock = FakeClock()
    old, new = recorder_at(clock), recorder_at(clock)
    early = snapshot_of(old, "r1", shared_store=True, shared_sessions=7)
    clock.now += 3
    late = snapshot_of(new, "r2", shared_store=True, shared_sessions=9)
    assert stats.merge([early, late], now=clock.now).sessions == 9
    unreadable = snapshot_of(new, "r2", shared_store=True, shared_sessions=None)
    assert stats.merge([unreadable], now=clock.now).sessions is None


# -- publishing through the Django cache ----------------------------------------------------------


@pytest.fixture
def fresh_counts():
    observe.recorder.reset()
    cache.delete(stats.INDEX_KEY)
    yield observe.recorder
    observe.recorder.reset()
    cache.delete(stats.INDEX_KEY)


def test_collect_sums_the_published_replicas_and_this_process_live(fresh_counts):
    """Another replica's published snapshot is added; this process's own published one is not counted
    twice (its live counts are used); a withdrawn replica drops out."""
    now = observe.recorder.clock()
    observe.recorder.record("echo", "gw", False, now)
    stats.publish(period=5)
    observe.recorder.record("echo", "gw", True, now)  # after publishing: live counts win
    other = observe.Recorder()
    other.record("echo", "gw", False, other.clock())
    other.record("other_tool", "gw2", False, other.clock())
    snapshot = other.snapshot() | {"replica": "elsewhere:1:ab", "gauges": {"sessions": 4, "streams": 2, "stdio": 1}}
    cache.set(stats.replica_key("elsewhere:1:ab"), snapshot, 15)
    cache.set(stats.INDEX_KEY, cache.get(stats.INDEX_KEY) | {"elsewhere:1:ab": snapshot["at"]}, 60)

    traffic = stats.collect()
    assert traffic.replicas == 2
    rows = {row.tool: row for row in traffic.tools}
    assert (rows["echo"].hour.calls, rows["echo"].hour.errors) == (3, 1)
    assert rows["other_tool"].hour.calls == 1
    assert traffic.sessions >= 4
    assert traffic.stdio >= 1

    cache.delete(stats.replica_key("elsewhere:1:ab"))  # its key expired
    assert stats.collect().replicas == 1
    stats.withdraw()
    assert stats.replica_id() not in cache.get(stats.INDEX_KEY)


def test_collect_works_with_no_database_at_all(fresh_counts, django_db_blocker):
    observe.recorder.record("echo", "gw", False, observe.recorder.clock())
    with django_db_blocker.block():
        traffic = stats.collect()
    assert traffic.tools[0].tool == "echo"


@override_settings(GATEWAY_STATS_PUBLISH_SECONDS=0)
def test_no_publisher_thread_when_the_setting_is_0():
    assert stats.start_publishing() is None


@override_settings(GATEWAY_STATS_PUBLISH_SECONDS=0.05)
def test_the_publisher_thread_publishes_and_withdraws(fresh_counts):
    publisher = stats.start_publishing()
    try:
        assert publisher is not None
        assert stats.start_publishing() is publisher  # once per process
        for _ in range(100):
            if cache.get(stats.replica_key(stats.replica_id())) is not None:
                break
            publisher._stopped.wait(0.02)
        assert stats.replica_id() in cache.get(stats.INDEX_KEY)
    finally:
        stats.stop_publishing()
    assert cache.get(stats.replica_key(stats.replica_id())) is None


# -- real tools/calls through the gateway -----------------------------------------------------------


class FlakyUpstream(EchoUpstream):
    """Echoes, except that arguments {"fail": ...} get an isError result."""

    async def request(self, method, params=None, *, timeout=None, on_message=None) -> dict:
        result = await super().request(method, params, timeout=timeout, on_message=on_message)
        if method == "tools/call" and "fail" in (params or {}).get("arguments", {}):
            return {**result, "isError": True}
        return result


@pytest.fixture
async def _close_worker_connections():
    yield
    from asgiref.sync import sync_to_async

    await sync_to_async(_close_connection)()


@pytest.fixture
def gateway(db, fresh_counts, _close_worker_connections):
    reset_core()
    edge.credentials.clear()
    user = UserFactory(username="observer", is_staff=True)
    ToolFactory(name="echo_tool", gateway=GatewayFactory(name="echo"))
    get_core().upstreams.override("echo", FlakyUpstream())
    yield auth.token_issue(username=user.username)
    reset_core()


def call(request_id: int, name: str, arguments: dict) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@pytest.mark.django_db(transaction=True)
async def test_tools_calls_of_both_eras_appear_in_collect(gateway, django_db_blocker):
    """A session's tools/calls (one fine, one isError, one naming no tool) and a 2026-07-28 tools/call are
    each counted once, under the tool and its gateway, with the database blocked on the call path; the
    open session shows in the gauges."""
    token = gateway
    # With the shared Redis store (the PostgreSQL + Redis pass) the count is the deployment's: sessions
    # earlier tests opened are still live there, so the open session shows as one more.
    sessions_before = stats.collect().sessions
    status, headers, _ = await asgi_post(INITIALIZE, token=token)
    assert status == 200
    session = headers["mcp-session-id"]
    with django_db_blocker.block():
        _, _, ok = await asgi_post(call(2, "echo_tool", {"x": "y"}), token=token, session=session)
        _, _, failed = await asgi_post(call(3, "echo_tool", {"fail": "yes"}), token=token, session=session)
        _, _, unknown = await asgi_post(call(4, "no_such_tool", {}), token=token, session=session)
        body, extra = modern_request(5, "tools/call", {"name": "echo_tool", "arguments": {"x": "z"}})
        status, _, modern = await asgi_post(body, token=token, extra=extra)
    assert ok["result"]["isError"] is False
    assert failed["result"]["isError"] is True
    assert unknown["error"]["code"] == -32602
    assert status == 200
    assert modern["result"]["resultType"] == "complete"

    traffic = stats.collect()
    rows = {(row.tool, row.gateway): row for row in traffic.tools}
    echo = rows[("echo_tool", "echo")]
    assert (echo.recent.calls, echo.recent.errors) == (3, 1)
    assert echo.failing
    assert rows[(observe.UNKNOWN_TOOL, observe.LOCAL)].recent.errors == 1
    assert [(row.gateway, row.hour.calls) for row in traffic.gateways] == [("echo", 3)]
    assert traffic.sessions == sessions_before + 1
