"""The gateway health state machine (registry.gateway_state): checks, backoff, passive failures, the list
of gateways due for a check, and catalog bumps only when the state changes."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from registry import events, services
from registry.choices import Health
from registry.gateway_state import gateway_check_record, gateway_passive_failure, gateways_due_for_check
from registry.models import Gateway
from tests.factories import GatewayFactory

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(autouse=True)
def _health_settings(settings):
    settings.GATEWAY_HEALTH_INTERVAL = 15.0
    settings.GATEWAY_HEALTH_FAILURES = 3
    settings.GATEWAY_HEALTH_MAX_BACKOFF = 300.0


def seconds(n: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=n)


def fail(gateway: Gateway, at: datetime.datetime = NOW, error: str = "connection refused by 127.0.0.1:9"):
    return gateway_check_record(gateway_id=gateway.pk, ok=False, error=error, now=at)


@pytest.mark.django_db
def test_a_successful_check_makes_the_gateway_healthy():
    gateway = GatewayFactory(last_error="old", consecutive_failures=2, health=Health.DEGRADED)
    assert gateway_check_record(gateway_id=gateway.pk, ok=True, now=NOW) == ("degraded", "healthy")
    gateway.refresh_from_db()
    assert gateway.health == Health.HEALTHY
    assert (gateway.consecutive_failures, gateway.last_error) == (0, "")
    assert gateway.last_seen_at == gateway.last_checked_at == gateway.health_changed_at == NOW
    assert gateway.next_check_at is None


@pytest.mark.django_db
def test_failures_degrade_then_make_unreachable_at_the_threshold():
    """The first failure degrades; the third (GATEWAY_HEALTH_FAILURES) makes the gateway unreachable."""
    gateway = GatewayFactory()
    assert fail(gateway) == ("unknown", "degraded")
    assert fail(gateway, NOW + seconds(15)) == ("degraded", "degraded")
    assert fail(gateway, NOW + seconds(30), "timed out after 10 s") == ("degraded", "unreachable")
    gateway.refresh_from_db()
    assert gateway.consecutive_failures == 3
    assert gateway.last_error == "timed out after 10 s"
    assert gateway.health_changed_at == NOW + seconds(30)
    assert gateway.last_checked_at == NOW + seconds(30)
    assert gateway.last_seen_at is None


@pytest.mark.django_db
def test_an_unreachable_gateway_is_checked_with_a_doubling_backoff_up_to_the_maximum():
    gateway = GatewayFactory(health=Health.DEGRADED, consecutive_failures=2)
    waits = []
    for _ in range(8):
        fail(gateway)
        gateway.refresh_from_db()
        waits.append((gateway.next_check_at - NOW).total_seconds())
    assert waits == [15, 30, 60, 120, 240, 300, 300, 300]


@pytest.mark.django_db
def test_a_huge_failure_count_keeps_the_maximum_backoff():
    gateway = GatewayFactory(health=Health.UNREACHABLE, consecutive_failures=100_000)
    fail(gateway)
    gateway.refresh_from_db()
    assert gateway.next_check_at == NOW + seconds(300)


@pytest.mark.django_db
def test_a_degraded_gateway_waits_the_ordinary_interval():
    gateway = GatewayFactory()
    fail(gateway)
    gateway.refresh_from_db()
    assert gateway.next_check_at is None


@pytest.mark.django_db
def test_recovery_clears_the_backoff():
    gateway = GatewayFactory(health=Health.UNREACHABLE, consecutive_failures=5, next_check_at=NOW)
    assert gateway_check_record(gateway_id=gateway.pk, ok=True, now=NOW) == ("unreachable", "healthy")
    gateway.refresh_from_db()
    assert gateway.next_check_at is None
    assert gateway.consecutive_failures == 0


@pytest.mark.django_db
def test_the_catalog_version_moves_only_when_the_state_changes(django_capture_on_commit_callbacks):
    gateway = GatewayFactory()
    start = events.catalog_version()
    gateway_check_record(gateway_id=gateway.pk, ok=True, now=NOW)  # unknown -> healthy
    assert events.catalog_version() == start + 1
    gateway_check_record(gateway_id=gateway.pk, ok=True, now=NOW + seconds(15))  # stays healthy
    assert events.catalog_version() == start + 1
    fail(gateway)  # -> degraded
    fail(gateway)  # stays degraded
    assert events.catalog_version() == start + 2
    fail(gateway)  # -> unreachable
    fail(gateway)  # stays
    assert events.catalog_version() == start + 3


@pytest.mark.django_db
def test_a_state_that_holds_keeps_its_change_time():
    gateway = GatewayFactory()
    fail(gateway)
    fail(gateway, NOW + seconds(15))
    gateway.refresh_from_db()
    assert gateway.health_changed_at == NOW
    assert gateway.last_checked_at == NOW + seconds(15)


@pytest.mark.django_db
def test_a_long_error_is_cut_and_an_empty_one_is_named():
    gateway = GatewayFactory()
    fail(gateway, error="x" * 5000)
    gateway.refresh_from_db()
    assert len(gateway.last_error) == 2000
    fail(gateway, error="")
    gateway.refresh_from_db()
    assert gateway.last_error == "the health check failed"


@pytest.mark.django_db
def test_the_threshold_setting_is_read_when_used(settings):
    settings.GATEWAY_HEALTH_FAILURES = 1
    gateway = GatewayFactory()
    assert fail(gateway) == ("unknown", "unreachable")


@pytest.mark.django_db
def test_a_failed_read_of_the_catalog_counts_as_a_failed_check():
    gateway = GatewayFactory(health=Health.HEALTHY)
    services.gateway_failure_record(gateway=gateway, error="connection refused by 127.0.0.1:9")
    gateway.refresh_from_db()
    assert (gateway.health, gateway.consecutive_failures) == (Health.DEGRADED, 1)
    assert gateway.last_checked_at is not None


# ---- passive failures -------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("state", [Health.HEALTHY, Health.UNKNOWN])
def test_a_failed_call_degrades_a_healthy_or_unknown_gateway_at_once(state):
    gateway = GatewayFactory(health=state)
    start = events.catalog_version()
    assert gateway_passive_failure(name=gateway.name, error="connection refused by 127.0.0.1:9") is True
    gateway.refresh_from_db()
    assert gateway.health == Health.DEGRADED
    assert gateway.last_error == "connection refused by 127.0.0.1:9"
    assert gateway.consecutive_failures == 1
    assert gateway.next_check_at is not None
    assert gateway.next_check_at <= timezone.now()
    assert events.catalog_version() == start + 1


@pytest.mark.django_db
@pytest.mark.parametrize("state", [Health.DEGRADED, Health.UNREACHABLE])
def test_a_failed_call_leaves_a_degraded_or_unreachable_gateway_to_its_checks(state):
    gateway = GatewayFactory(health=state, consecutive_failures=2, last_error="before")
    start = events.catalog_version()
    assert gateway_passive_failure(name=gateway.name, error="new") is False
    gateway.refresh_from_db()
    assert (gateway.health, gateway.consecutive_failures, gateway.last_error) == (state, 2, "before")
    assert events.catalog_version() == start


@pytest.mark.django_db
def test_a_failed_call_to_an_unknown_name_changes_nothing():
    assert gateway_passive_failure(name="nobody", error="x") is False


# ---- what is due --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_gateways_due_for_a_check():
    never = GatewayFactory(name="never")
    stale = GatewayFactory(name="stale", last_checked_at=NOW - seconds(16))
    GatewayFactory(name="fresh", last_checked_at=NOW - seconds(5))
    backoff_past = GatewayFactory(
        name="backoff-past", last_checked_at=NOW - seconds(60), next_check_at=NOW - seconds(1)
    )
    GatewayFactory(name="backoff-ahead", last_checked_at=NOW - seconds(60), next_check_at=NOW + seconds(100))
    GatewayFactory(name="disabled", enabled=False)
    assert gateways_due_for_check(now=NOW) == [never.pk, backoff_past.pk, stale.pk]


@pytest.mark.django_db
def test_an_unreachable_gateway_is_due_again_when_its_backoff_ends():
    gateway = GatewayFactory(health=Health.DEGRADED, consecutive_failures=3)
    fail(gateway)  # the fourth failure: 30 s
    assert gateways_due_for_check(now=NOW + seconds(29)) == []
    assert gateways_due_for_check(now=NOW + seconds(30)) == [gateway.pk]


@pytest.mark.django_db
def test_the_interval_setting_is_read_when_used(settings):
    gateway = GatewayFactory(last_checked_at=NOW - seconds(20))
    settings.GATEWAY_HEALTH_INTERVAL = 60.0
    assert gateways_due_for_check(now=NOW) == []
    settings.GATEWAY_HEALTH_INTERVAL = 10.0
    assert gateways_due_for_check(now=NOW) == [gateway.pk]


# ---- concurrency --------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_are_all_counted():
    """Two recorders at once (a scheduled check and a failed sync) both count: the row is locked while one
    reads and writes the count."""
    if connection.vendor == "sqlite" and "memory" in str(connection.settings_dict["NAME"]):
        pytest.skip("the in-memory SQLite test database locks tables, not rows, across threads")
    gateway = GatewayFactory()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def record() -> None:
        try:
            start.wait(5)
            for _ in range(5):
                fail(gateway)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    gateway.refresh_from_db()
    assert gateway.consecutive_failures == 20


CONCURRENT_RECORDERS = """
import threading
import django
django.setup()
from django.db import connection
from registry.gateway_state import gateway_check_record
from registry.models import Gateway

gateway = Gateway.objects.create(name="fx", url="http://127.0.0.1:9/mcp")
start = threading.Barrier(4)
errors = []

def record():
    try:
        start.wait(5)
        for _ in range(5):
            gateway_check_record(gateway_id=gateway.pk, ok=False, error="connection refused")
    except BaseException as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=record) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(60)
gateway.refresh_from_db()
print(gateway.consecutive_failures, errors)
"""


def test_concurrent_failures_are_all_counted_on_the_embedded_sqlite(tmp_path: Path):
    """The embedded default (a SQLite file, WAL, BEGIN IMMEDIATE): recorders in four threads wait for each
    other, and every failure is counted."""
    root = Path(__file__).resolve().parents[2]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'state.sqlite3'}",
        "SECRET_KEY": "gateway-state-test-secret-key-0123456789-abcdefghij",
    }

    def run(*argv: str) -> str:
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run(sys.executable, "manage.py", "migrate", "--noinput", "-v0")
    assert run(sys.executable, "-c", CONCURRENT_RECORDERS).split()[-2:] == ["20", "[]"]
