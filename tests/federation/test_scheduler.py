"""The scheduler: what a tick finds due, jobs under the gateway's lease, where enqueue sends a job, and the
in-process runner (its thread, its pool, one queued job per gateway and job). The processes that run it for
real (a gateway with the in-process scheduler, Celery worker and beat) are in test_celery.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection
from django.utils import timezone

from federation import health, scheduler, sync, tasks
from registry import gateway_state, leases
from registry.choices import Health, SyncTrigger
from registry.exceptions import InvalidInput
from registry.models import Gateway, SyncRun
from tests.factories import GatewayFactory


def wait_until(condition, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def enqueued(monkeypatch):
    """What tick hands on, instead of running it."""
    jobs: list[tuple[str, int, dict]] = []
    monkeypatch.setattr(
        scheduler, "enqueue", lambda job, gateway_id, **options: jobs.append((job, gateway_id, options))
    )
    return jobs


@pytest.fixture
def due_checks(monkeypatch):
    """The health helper's due rule, answered by the test."""
    answer: list[int] = []
    seen: list = []

    def due(now=None):
        seen.append(now)
        return list(answer)

    monkeypatch.setattr(gateway_state, "gateways_due_for_check", due, raising=False)
    return answer, seen


def run(gateway, started_ago: float, ok: bool = True):
    started = timezone.now() - timedelta(seconds=started_ago)
    return SyncRun.objects.create(gateway=gateway, trigger="schedule", started_at=started, finished_at=started, ok=ok)


@pytest.mark.django_db
def test_tick_enqueues_the_due_checks_and_syncs(enqueued, due_checks, settings):
    settings.GATEWAY_SYNC_INTERVAL = 300
    now = timezone.now()
    never = GatewayFactory(name="never")
    old = GatewayFactory(name="old", last_synced_at=now - timedelta(seconds=400))
    GatewayFactory(name="recent", last_synced_at=now - timedelta(seconds=10))
    own = GatewayFactory(name="own", sync_interval=5, last_synced_at=now - timedelta(seconds=10))
    GatewayFactory(name="zero", sync_interval=0)
    GatewayFactory(name="disabled", enabled=False)
    GatewayFactory(name="down", health=Health.UNREACHABLE, last_synced_at=now - timedelta(days=1))
    failing = GatewayFactory(name="failing", health=Health.DEGRADED)
    run(failing, started_ago=10, ok=False)  # tried 10 s ago: not again before the interval
    recovered = GatewayFactory(
        name="recovered",
        health=Health.HEALTHY,
        health_changed_at=now - timedelta(seconds=5),
        last_synced_at=now - timedelta(seconds=60),
    )
    answer, seen = due_checks
    answer += [old.pk, never.pk]

    report = scheduler.tick(now=now)

    assert seen == [now]
    assert report.checks == [old.pk, never.pk]
    assert sorted(report.syncs) == sorted([never.pk, old.pk, own.pk, recovered.pk])
    assert report.recoveries == [recovered.pk]
    assert [(job, gid) for job, gid, _ in enqueued if job == "check"] == [("check", old.pk), ("check", never.pk)]
    syncs = {gid: options for job, gid, options in enqueued if job == "sync"}
    assert set(syncs) == {never.pk, old.pk, own.pk, recovered.pk}
    assert all(options == {"trigger": SyncTrigger.SCHEDULE} for options in syncs.values())


@pytest.mark.django_db
def test_a_gateway_synced_after_its_recovery_is_not_synced_again(enqueued, due_checks, settings):
    settings.GATEWAY_SYNC_INTERVAL = 0
    now = timezone.now()
    GatewayFactory(health=Health.HEALTHY, health_changed_at=now - timedelta(seconds=30), last_synced_at=now)
    fresh = GatewayFactory(name="fresh", health=Health.HEALTHY, health_changed_at=now - timedelta(seconds=30))
    run(fresh, started_ago=1)  # its recovery sync was tried (and failed) already
    assert scheduler.tick(now=now).syncs == []


@pytest.mark.django_db
def test_run_job_calls_the_service_under_the_lease_and_releases_it(monkeypatch):
    gateway = GatewayFactory()
    calls = []

    def check(*, gateway, timeout=None):
        calls.append(("check", gateway.pk, Gateway.objects.get(pk=gateway.pk).lease_owner))

    def fake_sync(*, gateway, trigger="manual", pool=None, timeout=None):
        calls.append(("sync", gateway.pk, trigger))

    monkeypatch.setattr(health, "gateway_check", check)
    monkeypatch.setattr(sync, "gateway_sync", fake_sync)
    assert scheduler.run_job("check", gateway.pk) == "done"
    assert scheduler.run_job("sync", gateway.pk, trigger="list_changed") == "done"
    assert scheduler.run_job("sync", gateway.pk) == "done"
    assert calls[0][:2] == ("check", gateway.pk)
    assert calls[0][2]  # the lease was held while it ran
    assert calls[1:] == [("sync", gateway.pk, "list_changed"), ("sync", gateway.pk, "schedule")]
    gateway.refresh_from_db()
    assert (gateway.lease_owner, gateway.lease_until) == ("", None)


@pytest.mark.django_db
def test_run_job_never_raises_for_a_failure_and_still_releases(monkeypatch, caplog):
    gateway = GatewayFactory()

    def unreachable(*, gateway, timeout=None):
        raise InvalidInput("connection refused by 127.0.0.1:9")

    def broken(*, gateway, trigger="manual", pool=None, timeout=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(health, "gateway_check", unreachable)
    monkeypatch.setattr(sync, "gateway_sync", broken)
    assert scheduler.run_job("check", gateway.pk) == "failed"
    assert scheduler.run_job("sync", gateway.pk) == "error"
    assert "a bug" in caplog.text
    assert scheduler.run_job("check", 987654) == "gone"
    gateway.refresh_from_db()
    assert gateway.lease_owner == ""
    with pytest.raises(ValueError, match="Unknown job 'dance'"):
        scheduler.run_job("dance", gateway.pk)


@pytest.mark.django_db(transaction=True)
def test_a_job_of_a_gateway_whose_lease_is_held_is_skipped(monkeypatch):
    """Two threads (standing for two workers): while one checks the gateway, the other's check and sync of the
    same gateway are skipped, and another gateway's job runs."""
    busy, other = GatewayFactory(name="busy"), GatewayFactory(name="other")
    inside, release = threading.Event(), threading.Event()
    ran: list[tuple[str, int]] = []

    def slow_check(*, gateway, timeout=None):
        ran.append(("check", gateway.pk))
        if gateway.pk == busy.pk:
            inside.set()
            assert release.wait(20)

    monkeypatch.setattr(health, "gateway_check", slow_check)
    monkeypatch.setattr(sync, "gateway_sync", lambda *, gateway, **kw: ran.append(("sync", gateway.pk)))
    results: list[str] = []

    def first_worker():
        try:
            results.append(scheduler.run_job("check", busy.pk))
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    worker.start()
    try:
        assert inside.wait(20)
        assert scheduler.run_job("check", busy.pk) == "busy"
        assert scheduler.run_job("sync", busy.pk) == "busy"
        assert scheduler.run_job("check", other.pk) == "done"
    finally:
        release.set()
        worker.join(20)
    assert results == ["done"]
    assert ran == [("check", busy.pk), ("check", other.pk)]
    assert scheduler.run_job("sync", busy.pk) == "done"  # released: the next one runs


@pytest.mark.django_db
def test_enqueue_runs_inline_when_no_scheduler_runs(monkeypatch, settings):
    settings.GATEWAY_SCHEDULER = "off"
    jobs = []
    monkeypatch.setattr(
        scheduler, "run_job", lambda job, gateway_id, **options: jobs.append((job, gateway_id, options))
    )
    scheduler.enqueue("sync", 7, trigger="change")
    scheduler.enqueue("check", 8)
    assert jobs == [("sync", 7, {"trigger": "change"}), ("check", 8, {})]
    with pytest.raises(ValueError, match="Unknown job 'nap'"):
        scheduler.enqueue("nap", 8)


def test_enqueue_sends_a_celery_task_when_celery_runs_the_work(monkeypatch, settings):
    settings.GATEWAY_SCHEDULER = "celery"
    sent = []
    monkeypatch.setattr(tasks.check_gateway, "delay", lambda *args: sent.append(("check_gateway", *args)))
    monkeypatch.setattr(tasks.sync_gateway, "delay", lambda *args: sent.append(("sync_gateway", *args)))
    scheduler.enqueue("check", 3)
    scheduler.enqueue("sync", 4, trigger=SyncTrigger.CHANGE)
    assert sent == [("check_gateway", 3), ("sync_gateway", 4, "change")]


def test_a_broker_that_is_down_does_not_fail_the_caller(monkeypatch, settings, caplog):
    settings.GATEWAY_SCHEDULER = "celery"

    def down(*args):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    monkeypatch.setattr(tasks.sync_gateway, "delay", down)
    scheduler.enqueue("sync", 4)
    assert "could not queue the sync of gateway 4" in caplog.text


@pytest.mark.parametrize(
    ("setting", "redis", "mode"),
    [
        ("auto", None, "inprocess"),
        ("auto", "redis://r:6379/0", "celery"),
        ("off", "redis://r", "off"),
        ("celery", None, "celery"),
    ],
)
def test_the_mode_resolves_auto_by_redis(settings, setting, redis, mode):
    settings.GATEWAY_SCHEDULER, settings.REDIS_URL = setting, redis
    assert scheduler.scheduler_mode() == mode


def test_tasks_are_thin_callers(monkeypatch):
    calls = []
    monkeypatch.setattr(
        scheduler, "run_job", lambda job, gateway_id, **options: calls.append((job, gateway_id, options)) or "done"
    )
    monkeypatch.setattr(scheduler, "tick", lambda: scheduler.TickReport(checks=[1], syncs=[2]))
    assert tasks.check_gateway.run(5) == "done"
    assert calls[-1] == ("check", 5, {})
    tasks.sync_gateway.run(6, "manual")
    assert calls[-1] == ("sync", 6, {"trigger": "manual"})
    assert tasks.tick.run() == {"checks": [1], "syncs": [2], "recoveries": []}
    monkeypatch.setattr(
        "federation.peers.peers_discover", lambda: type("Report", (), {"summary": lambda self: "1 found"})()
    )
    assert tasks.discover_peers.run() == {"summary": "1 found"}


class Recorder:
    """A run_job stand-in for the pool: records, and blocks the jobs of gateway 1 until released."""

    def __init__(self):
        self.ran: list[tuple[str, int, str]] = []
        self.release = threading.Event()

    def __call__(self, job, gateway_id, **options):
        if gateway_id == 1:
            assert self.release.wait(20)

        async def inner():
            # What the health and sync services do: async_to_sync around the upstream clients, which may
            # come back to a thread-sensitive sync_to_async (the ORM).
            return await sync_to_async(lambda: threading.current_thread().name)()

        self.ran.append((job, gateway_id, async_to_sync(inner)()))
        return "done"


def test_the_pool_runs_one_queued_job_per_gateway_and_job(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(scheduler, "run_job", recorder)
    monkeypatch.setattr(scheduler, "tick", lambda **kw: scheduler.TickReport())
    runner = scheduler.InProcessScheduler(tick_seconds=60, workers=3)
    runner.start()
    try:
        assert runner.submit("check", 1)
        assert not runner.submit("check", 1)  # already queued or running
        assert runner.submit("sync", 1)
        assert runner.submit("check", 2)
        wait_until(lambda: ("check", 2) in [r[:2] for r in recorder.ran], what="the check of gateway 2")
        recorder.release.set()
        wait_until(lambda: len(recorder.ran) == 3, what="all jobs")
        wait_until(lambda: runner.submit("check", 1), what="gateway 1's check to be free to queue again")
        wait_until(lambda: len(recorder.ran) == 4, what="the requeued check")
    finally:
        recorder.release.set()
        runner.stop()
    assert all(thread.startswith("gateway-job") for _, _, thread in recorder.ran)
    assert not runner.submit("check", 3)  # stopped: nothing more is taken


def test_the_scheduler_thread_ticks_until_stopped(monkeypatch):
    ticks = []
    monkeypatch.setattr(scheduler, "tick", lambda **kw: ticks.append(time.monotonic()) or scheduler.TickReport())
    runner = scheduler.InProcessScheduler(tick_seconds=0.05, workers=1)
    runner.start()
    wait_until(lambda: len(ticks) >= 3, what="three ticks")
    runner.stop()
    assert not runner.running
    count = len(ticks)
    time.sleep(0.2)
    assert len(ticks) == count


def test_a_failing_tick_does_not_stop_the_thread(monkeypatch, caplog):
    ticks = []

    def tick(**kw):
        ticks.append(1)
        raise RuntimeError("database is locked")

    monkeypatch.setattr(scheduler, "tick", tick)
    runner = scheduler.InProcessScheduler(tick_seconds=0.02, workers=1)
    runner.start()
    try:
        wait_until(lambda: len(ticks) >= 2, what="a second tick after a failed one")
    finally:
        runner.stop()
    assert "scheduler tick failed" in caplog.text


def test_start_background_starts_once_per_process_and_only_in_process_mode(monkeypatch, settings):
    monkeypatch.setattr(scheduler, "tick", lambda **kw: scheduler.TickReport())
    settings.GATEWAY_SCHEDULER = "off"
    assert scheduler.start_background() is None
    settings.GATEWAY_SCHEDULER = "celery"
    assert scheduler.start_background() is None
    assert scheduler.running_scheduler() is None
    settings.GATEWAY_SCHEDULER, settings.REDIS_URL = "auto", None
    try:
        first = scheduler.start_background()
        assert first is not None
        assert first.running
        assert scheduler.start_background() is first
        assert scheduler.running_scheduler() is first
        jobs = []
        monkeypatch.setattr(first, "submit", lambda job, gateway_id, **options: jobs.append((job, gateway_id)))
        scheduler.enqueue("check", 9)  # to the running scheduler's pool
        assert jobs == [("check", 9)]
    finally:
        scheduler.stop_background()
    assert scheduler.running_scheduler() is None


def test_importing_asgi_under_test_settings_starts_nothing():
    import gateway_project.asgi  # noqa: F401

    assert scheduler.running_scheduler() is None


@pytest.mark.django_db
def test_the_admin_hooks_reach_the_scheduler(monkeypatch):
    from registry import hooks

    jobs = []
    monkeypatch.setattr(
        scheduler, "enqueue", lambda job, gateway_id, **options: jobs.append((job, gateway_id, options))
    )
    hooks.gateway_check_requested.send(sender=Gateway, gateway_id=1)
    hooks.gateway_sync_requested.send(sender=Gateway, gateway_id=2)
    assert jobs == [("check", 1, {}), ("sync", 2, {"trigger": SyncTrigger.MANUAL})]


def test_leases_used_by_jobs_are_the_registry_ones():
    assert scheduler.leases is leases
