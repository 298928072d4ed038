"""Where the periodic work runs, for real: a Celery worker and beat (`celery -A gateway_project worker` /
`beat`) on this machine's Redis, and the embedded default (a gateway process with the in-process
scheduler, no Redis). Each run registers a gateway for a real upstream fixture process and watches its own
SQLite database until scheduled syncs (SyncRun rows, trigger "schedule") and health checks
(``last_checked_at``) appear.

The processes use ``tests/federation/sched_settings.py``: the health and sync helpers' stand-ins while those
are stubs, and Celery's keys under a GATEWAY_REDIS_PREFIX of this test's own (deleted afterwards, nothing else)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.fixtures.servers import start_upstream
from tests.live_gateway import ROOT, start_live_gateway
from tests.redis_keys import scoped_prefix

SETTINGS = "tests.federation.sched_settings"
DEADLINE = 120.0  # seconds: processes start slowly on a busy machine


def redis_url() -> str | None:
    """REDIS_URL, else the local Redis when one listens on 127.0.0.1:6379."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return url
    except OSError:
        return None


def process_env(state: Path, **overrides: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": f"sqlite:///{state / 'gateway.sqlite3'}",
        "SECRET_KEY": "sched-test-secret-key-0123456789-abcdefghij",
        "LOG_LEVEL": "INFO",
        **overrides,
    }


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def query(state: Path, sql: str, *params: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(state / "gateway.sqlite3", timeout=10)) as db:
        return db.execute(sql, params).fetchall()


def wait_for(state: Path, what: str, sql: str, *params: object, logs: list[Path]) -> list[tuple]:
    deadline = time.monotonic() + DEADLINE
    while True:
        rows = query(state, sql, *params)
        if rows and all(row[0] for row in rows):
            return rows
        if time.monotonic() > deadline:
            tails = "\n".join(
                f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists()
            )
            raise AssertionError(f"no {what} within {DEADLINE:g} s\n{tails}")
        time.sleep(0.5)


def celery_command(*args: str) -> list[str]:
    program = Path(sys.executable).parent / "celery"
    return [str(program), *args] if program.exists() else [sys.executable, "-m", "celery", *args]


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own process group, ended with the whole group (SIGTERM, then SIGKILL)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue


SCHEDULED_SYNCS = (
    "SELECT count(*) FROM registry_syncrun r JOIN registry_gateway g ON g.id = r.gateway_id "
    "WHERE g.name = ? AND r.trigger = 'schedule' AND r.ok"
)
LAST_CHECKED = "SELECT last_checked_at FROM registry_gateway WHERE name = ?"


@pytest.fixture
def upstream():
    server = start_upstream("streamable-http")
    yield server
    server.stop()


def test_beat_ticks_and_the_worker_checks_and_syncs_a_gateway(tmp_path, upstream):
    url = redis_url()
    if url is None:
        pytest.skip("needs Redis: set REDIS_URL or run one on 127.0.0.1:6379")
    import redis

    with scoped_prefix(url, "sched") as prefix:
        env = process_env(
            tmp_path,
            SCHED_TEST_BROKER_URL=url,
            GATEWAY_REDIS_PREFIX=prefix,
            GATEWAY_SCHEDULER="celery",
            GATEWAY_SCHEDULER_TICK="1",
            GATEWAY_SYNC_INTERVAL="2",
            GATEWAY_HEALTH_INTERVAL="1",
        )
        manage(env, "migrate", "--noinput", "-v0")
        manage({**env, "GATEWAY_SCHEDULER": "off"}, "gateway_add", "fx", "--url", upstream.url)
        logs = [tmp_path / "worker.log", tmp_path / "beat.log"]
        worker_argv = celery_command(
            "-A", "gateway_project", "worker", "--pool=solo", "--without-mingle", "--without-gossip",
            "--without-heartbeat", "-l", "INFO",
        )  # fmt: skip
        beat_argv = celery_command(
            "-A", "gateway_project", "beat", "-l", "INFO", "-s", str(tmp_path / "beat-schedule"),
            "--pidfile", str(tmp_path / "beat.pid"),
        )  # fmt: skip
        with started(worker_argv, env, logs[0]), started(beat_argv, env, logs[1]):
            wait_for(tmp_path, "scheduled sync", SCHEDULED_SYNCS, "fx", logs=logs)
            wait_for(tmp_path, "health check", LAST_CHECKED, "fx", logs=logs)
            assert "federation.tasks.tick" in logs[1].read_text()
            worker_log = logs[0].read_text()
            assert "federation.tasks.sync_gateway" in worker_log
            assert "federation.tasks.check_gateway" in worker_log
            # The broker's keys are under the gateway's prefix (the queue's binding stays while the worker runs).
            with contextlib.closing(redis.Redis.from_url(url)) as client:
                assert client.exists(f"{prefix}:celery:_kombu.binding.celery")


def test_the_in_process_scheduler_of_a_gateway_checks_and_syncs_without_redis(tmp_path, upstream):
    """The embedded default: no broker, no worker; the gateway process itself ticks and runs the jobs."""
    overrides = {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_SCHEDULER": "auto",  # no REDIS_URL: in process
        "GATEWAY_SCHEDULER_TICK": "0.5",
        "GATEWAY_SYNC_INTERVAL": "2",
        "GATEWAY_HEALTH_INTERVAL": "1",
        "LOG_LEVEL": "INFO",
    }
    with start_live_gateway(tmp_path, **overrides) as gateway:
        status, body = gateway.api("POST", "/api/gateways", {"name": "fx", "url": upstream.url})
        assert status == 201, body
        logs = [tmp_path / "daphne.log"]
        wait_for(tmp_path, "scheduled sync", SCHEDULED_SYNCS, "fx", logs=logs)
        wait_for(tmp_path, "health check", LAST_CHECKED, "fx", logs=logs)
        status, runs = gateway.api("GET", f"/api/gateways/{body['id']}/sync-runs")
        assert status == 200
        assert any(run["trigger"] == "schedule" and run["ok"] for run in runs)

        upstream.stop()  # the next checks fail and say why
        wait_for(
            tmp_path,
            "failed check",
            "SELECT consecutive_failures, last_error FROM registry_gateway WHERE name = ?",
            "fx",
            logs=logs,
        )
        (error,) = query(tmp_path, "SELECT last_error FROM registry_gateway WHERE name = ?", "fx")[0]
        assert error
