"""Liveness (/health) and readiness (/ready) probes: open to everyone, JSON, 503 when a dependency is down."""

import asyncio
import os

import pytest
from django.test import Client, override_settings

from gateway_project import health

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def client():
    """No credentials: probes are for load balancers."""
    return Client()


def test_health_is_open_json_and_ok(client, settings):
    """/health answers 200 {"status": "ok"} without credentials, even with authentication required."""
    settings.GATEWAY_AUTH_REQUIRED = True
    response = client.get("/health")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_health_does_not_touch_the_database(client):
    """Liveness needs no database (this test has no database access at all)."""
    assert client.get("/health").status_code == 200


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL=None)
def test_ready_checks_the_database(client):
    """/ready answers 200 with a passing database check and no redis check when REDIS_URL is unset."""
    response = client.get("/ready")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database"}
    database = body["checks"]["database"]
    assert database["ok"] is True
    assert isinstance(database["ms"], int | float)
    assert "error" not in database


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL=UNREACHABLE_REDIS)
def test_ready_is_503_when_redis_is_unreachable(client):
    """With a Redis that refuses connections, /ready is 503 naming redis as failed; the database still passes."""
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is True
    redis = body["checks"]["redis"]
    assert redis["ok"] is False
    assert redis["error"]
    assert "Traceback" not in redis["error"]


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_ready_checks_redis_when_configured(client):
    """With REDIS_URL pointing at a live Redis, /ready lists a passing redis check."""
    with override_settings(REDIS_URL=os.environ["REDIS_URL"]):
        response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL=None)
def test_ready_is_503_when_the_database_fails(client, monkeypatch):
    """A failing database check makes /ready 503 with the error's kind and message, not a traceback."""

    def broken() -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(health, "_check_database", broken)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": {"ok": False, "error": "RuntimeError: database is gone"}},
    }


@pytest.mark.django_db(transaction=True)
@override_settings(REDIS_URL=UNREACHABLE_REDIS)
def test_ready_reports_a_hanging_check_as_timed_out(client, monkeypatch):
    """A check that does not answer within the probe's time limit is reported as 'timed out'."""

    async def never_answers(url: str) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(health, "_check_redis", never_answers)
    monkeypatch.setattr(health, "READY_TIMEOUT_SECONDS", 0.01)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == {"ok": False, "error": "timed out"}


def test_probes_ignore_bad_credentials(db):
    """A probe sent with a wrong Authorization header still answers: the probes do not authenticate."""
    client = Client(headers={"Authorization": "Bearer not-a-token"})
    assert client.get("/health").status_code == 200
    with override_settings(REDIS_URL=None):
        assert client.get("/ready").status_code == 200


@pytest.mark.django_db
def test_probes_answer_a_host_allowed_hosts_does_not_list_and_nothing_else_does(client, settings):
    """Kubernetes and container health checks probe by IP address (Host: 10.1.2.3:8000): /health and /ready
    answer it; every other path still refuses a foreign Host (400)."""
    settings.ALLOWED_HOSTS = ["gateway.example.com"]
    assert client.get("/health", HTTP_HOST="10.1.2.3:8000").json() == {"status": "ok"}
    ready = client.get("/ready", HTTP_HOST="10.1.2.3:8000")
    assert ready.status_code == 200, ready.content
    assert client.get("/api/tools", HTTP_HOST="10.1.2.3:8000").status_code == 400
    assert client.get("/admin/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
