"""The REST API while the catalog database cannot be reached (issue #16, fault 4; live in
tests/faults/test_postgres_outage.py): a request that fails on the database, its credentials' check included,
gets 503 with a JSON `detail` and Retry-After, never Django's HTML 500 page."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from registry import auth, services

DOWN = OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')


def _refuse(*args, **kwargs):
    raise DOWN


def _expect_503(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    assert response["Retry-After"] == "5"
    assert response.json() == {
        "detail": "Service Unavailable: the catalog database cannot be reached; try again shortly."
    }


def test_a_write_that_fails_on_the_database_is_503_json(staff_client, monkeypatch):
    monkeypatch.setattr(services, "entry_create", _refuse)
    _expect_503(staff_client.post_json("/api/tools", {"name": "t"}))


@pytest.mark.django_db
def test_credentials_that_cannot_be_checked_are_503_json(monkeypatch):
    from tests.conftest import ApiClient

    monkeypatch.setattr(auth, "principal_from_authorization", _refuse)
    _expect_503(ApiClient("Bearer x.y.z").patch_json("/api/tools/1", {"description": "d"}))
