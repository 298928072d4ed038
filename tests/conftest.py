"""Shared fixtures: users of each kind and API clients authenticated in each way."""

import base64
import os
import warnings

import pytest
from django.test import Client

from registry import auth
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"


# Modules whose tests run the same whatever DATABASE_URL and REDIS_URL say: their gateways are processes
# with their own SQLite database and in-memory channel layer (tests/live_gateway.start_live_gateway
# drops both variables), or they test the upstream clients and fixtures alone. They are marked
# `backend_independent`, so CI's PostgreSQL + Redis pass can leave them to the embedded-default pass.
BACKEND_INDEPENDENT = (
    "tests/bench/test_soak_report.py",
    "tests/federation/test_celery.py",
    "tests/gateway_project/test_browser.py",
    "tests/gateway_project/test_browser_playground.py",
    "tests/federation/test_chain.py",
    "tests/federation/test_drift.py",
    "tests/federation/test_peers.py",
    "tests/transports/test_failover.py",
    "tests/transports/test_stdio_supervision.py",
    "tests/fixtures/test_upstream_fixture.py",
    "tests/fuzz/",
    "tests/registry/test_openapi_fuzz.py",
    "tests/transports/test_everything.py",
    "tests/transports/test_modern.py",
    "tests/transports/test_modern_clients.py",
    "tests/transports/test_new_user_walks.py",
    "tests/transports/test_openapi_through_gateway.py",
    "tests/transports/test_sse_endpoint.py",
    "tests/transports/test_stdio_bridge.py",
    "tests/transports/test_through_gateway.py",
    "tests/transports/test_transport_table.py",
    "tests/transports/test_upstream_pool.py",
    "tests/transports/test_websocket_endpoint.py",
    "tests/transports/upstream/",
)


def pytest_collection_modifyitems(config, items):
    """Tests marked `redis` need REDIS_URL; without it they are skipped with the reason shown. Tests of the
    BACKEND_INDEPENDENT modules are marked `backend_independent`."""
    independent = pytest.mark.backend_independent
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if any(path == name or (name.endswith("/") and path.startswith(name)) for name in BACKEND_INDEPENDENT):
            item.add_marker(independent)
    if os.environ.get("REDIS_URL"):
        return
    skip = pytest.mark.skip(reason="needs Redis: set REDIS_URL (CI sets it; `make test` passes it through)")
    for item in items:
        if "redis" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test of several gateway processes (a `cluster` fixture that can tell its logs: tests/replicas',
    tests/faults/test_replica_faults.py's) shows the tails of their logs."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.when == "call" and report.failed and callable(getattr(cluster, "logs", None)):
        report.sections.append(("replica logs", cluster.logs()))
    return report


@pytest.fixture(scope="session", autouse=True)
def _redis_keys_of_this_run():
    """With REDIS_URL set, what this run left in Redis (sessions, stream logs, buckets, cache entries of this process
    and of the gateways the tests started: everything under the run's GATEWAY_REDIS_PREFIX) is deleted at the end,
    and nothing else."""
    yield
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        from tests.redis_keys import delete_keys, run_prefix

        try:
            delete_keys(url, run_prefix())
        except redis.RedisError as exc:
            warnings.warn(f"could not delete this run's Redis keys ({run_prefix()}:*): {exc}", stacklevel=1)


def basic(username: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class ApiClient(Client):
    """A test client that speaks JSON to /api/ with a fixed Authorization header."""

    def __init__(self, authorization: str | None = None):
        headers = {"Authorization": authorization} if authorization else {}
        super().__init__(headers=headers)

    def post_json(self, path, data=None, **kwargs):
        return self.post(path, data=data, content_type="application/json", **kwargs)

    def put_json(self, path, data=None, **kwargs):
        return self.put(path, data=data, content_type="application/json", **kwargs)

    def patch_json(self, path, data=None, **kwargs):
        return self.patch(path, data=data, content_type="application/json", **kwargs)


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", is_staff=True)


@pytest.fixture
def plain_user(db):
    return UserFactory(username="reader", is_staff=False)


@pytest.fixture
def admin_user(db):
    user = UserFactory(username="admin", is_staff=True)
    user.is_superuser = True
    user.save()
    return user


@pytest.fixture
def anon_client(db):
    """No credentials at all."""
    return ApiClient()


@pytest.fixture
def staff_client(staff_user):
    """A staff user over HTTP Basic: may read, write and call."""
    return ApiClient(basic(staff_user.username))


@pytest.fixture
def reader_client(plain_user):
    """A non-staff user over HTTP Basic: may read and call, not write."""
    return ApiClient(basic(plain_user.username))


@pytest.fixture
def staff_token(staff_user):
    return auth.token_issue(username=staff_user.username)


@pytest.fixture
def token_client(staff_token):
    """A staff user with a JWT bearer token."""
    return ApiClient(f"Bearer {staff_token}")
